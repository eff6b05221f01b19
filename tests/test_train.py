"""Training: data alignment, scale transfer, EMA, schedule, exact resume after a kill, DDP equivalence."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gridattn.data import imresize, write_image
from gridattn.models import CheckpointError, HMANet, hmanet_config
from gridattn.train import ModelEMA, PairedDataset, TrainConfig, lr_at, train, transfer_weights

MICRO = hmanet_config(2, "tiny").replace(embed_dim=16, depths=(2,), num_heads=(2,))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i, size in enumerate([(50, 62), (41, 57), (64, 64)]):
        smooth = imresize(rng.integers(0, 256, (size[0] // 4 + 1, size[1] // 4 + 1, 3)).astype(np.uint8), size=size)
        write_image(folder / "sub" / f"{i}.png", smooth)  # a class sub-folder, as in ImageNet
    return folder


def _undo(image: np.ndarray, transform: int) -> np.ndarray:
    hflip, vflip, transpose = (transform >> 2) & 1, (transform >> 1) & 1, transform & 1
    if transpose:
        image = image.transpose(1, 0, 2)
    if vflip:
        image = image[::-1]
    if hflip:
        image = image[:, ::-1]
    return image


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_crops_and_augmentations_keep_lr_and_hr_aligned(image_folder, scale):
    """Every pair is (T(crop of HR), T(same crop of the whole image's MATLAB LR)) for one of the 8 symmetries T."""
    from gridattn.data import read_image

    dataset = PairedDataset([image_folder], scale, patch_size=8, length=12, seed=3)
    images = [read_image(f) for f in dataset.files]
    for index in range(len(dataset)):
        lr, hr = (np.round(t.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for t in dataset[index])
        found = False
        for image in images:
            full = image[: image.shape[0] // scale * scale, : image.shape[1] // scale * scale]
            full_lr = imresize(full, 1 / scale)
            for transform in range(8):
                hr0, lr0 = _undo(hr, transform), _undo(lr, transform)
                for top in range(full_lr.shape[0] - 7):
                    for left in range(full_lr.shape[1] - 7):
                        if np.array_equal(full[top * scale:(top + 8) * scale, left * scale:(left + 8) * scale], hr0):
                            assert np.array_equal(full_lr[top:top + 8, left:left + 8], lr0)
                            found = True
        assert found, f"item {index} is not a crop of any image"


def test_items_depend_only_on_seed_and_index(image_folder):
    a = PairedDataset([image_folder], 2, patch_size=8, length=5, seed=1)
    b = PairedDataset([image_folder], 2, patch_size=8, length=5, seed=1)
    assert all(torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1]) for i in range(5))
    assert not torch.equal(a[0][1], PairedDataset([image_folder], 2, patch_size=8, length=5, seed=2)[0][1])


def test_patch_sizes_the_model_cannot_run_are_refused(image_folder):
    with pytest.raises(ValueError, match="42 must be a positive multiple of 16"):
        PairedDataset([image_folder], 3, patch_size=42, size_multiple=16)
    with pytest.raises(FileNotFoundError):
        PairedDataset([image_folder / "missing"], 2)


def test_transfer_copies_everything_but_the_upsampler():
    source = HMANet(hmanet_config(3, "tiny"))
    target = HMANet(hmanet_config(4, "tiny"))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = transfer_weights(source.state_dict(), target)
    after = target.state_dict()
    for key, value in after.items():
        if key.startswith("reconstruction.upsample."):
            assert torch.equal(value, before[key]) and "upsampler" in report.skipped[key]
        else:
            assert torch.equal(value, source.state_dict()[key]) and key in report.copied
    assert {k for k in report.skipped if k.startswith("reconstruction.upsample.")} == (
        {k for k in source.state_dict() if k.startswith("reconstruction.upsample.")}
        | {k for k in after if k.startswith("reconstruction.upsample.")}
    )
    # a fine-tune of the same scale keeps the trained upsampler
    same = HMANet(hmanet_config(3, "tiny"))
    report = transfer_weights(source.state_dict(), same, same_scale=True)
    assert not report.skipped and all(torch.equal(v, source.state_dict()[k]) for k, v in same.state_dict().items())


def test_ema_update_math():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 0.9 * 1 + 0.1 * 3))
    with torch.no_grad():
        model.weight.fill_(-1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 0.9 * 1.2 + 0.1 * -1))


def test_lr_schedule_is_multistep():
    config = TrainConfig("x", MICRO, ("x",), iterations=20, lr=0.1, milestones=(5, 12), gamma=0.5)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [5, 12], 0.5)
    for step in range(20):
        assert lr_at(config, step) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()


def _config(out, folder, **changes):
    base = dict(output_dir=str(out), model=MICRO.replace(drop_path_rate=0.1), data=(str(folder),), iterations=8,
                batch_size=2, patch_size=16, milestones=(4,), checkpoint_every=1, log_every=1, progress=False)
    return TrainConfig(**{**base, **changes})


RUNNER = """
import sys
from gridattn.train import TrainConfig, train
train(TrainConfig.from_dict({config!r}))
"""


def _count_steps(monkeypatch) -> list:
    """Record every optimiser update the trainer makes from now on."""
    import gridattn.train.trainer as trainer

    done, step = [], trainer._step
    monkeypatch.setattr(trainer, "_step", lambda *args: done.append(1) or step(*args))
    return done


def _check_resumed(uninterrupted_dir, resumed_dir, updates: int, remaining: int) -> None:
    """The resumed run made exactly the remaining updates and ended with the uninterrupted run's weights."""
    a = torch.load(uninterrupted_dir / "last.pt", weights_only=True)
    b = torch.load(resumed_dir / "last.pt", weights_only=True)
    assert updates == remaining, f"the resumed run made {updates} updates, {remaining} were left"
    assert b["step"] == a["step"]
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def test_resume_after_a_kill_gives_the_uninterrupted_weights(image_folder, tmp_path, monkeypatch):
    uninterrupted = _config(tmp_path / "a", image_folder, iterations=20)
    train(uninterrupted)
    interrupted = _config(tmp_path / "b", image_folder, iterations=20)
    process = subprocess.Popen([sys.executable, "-c", RUNNER.format(config=interrupted.to_dict())])
    checkpoint = tmp_path / "b" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline:
        if checkpoint.is_file() and torch.load(checkpoint, weights_only=True)["step"] >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["step"]
    assert 3 <= killed_at < 20, killed_at
    updates = _count_steps(monkeypatch)
    train(interrupted)  # resumes from last.pt
    _check_resumed(tmp_path / "a", tmp_path / "b", len(updates), 20 - killed_at)


@pytest.mark.parametrize("broken", ["optimizer state skipped", "checkpoint ignored", "RNG state skipped"])
def test_the_resume_check_fails_for_a_broken_resume(image_folder, tmp_path, monkeypatch, broken):
    """Negative controls: the check above fails when the resume skips the optimiser state, starts over, or
    forgets the RNG state (drop-path masks then differ)."""
    import gridattn.train.trainer as trainer

    train(_config(tmp_path / "a", image_folder))
    interrupted = _config(tmp_path / "b", image_folder)
    train(dataclasses.replace(interrupted, max_steps=4))  # a clean stop after 4 of 8 steps
    if broken == "optimizer state skipped":
        monkeypatch.setattr(torch.optim.Adam, "load_state_dict", lambda self, state: None)
    elif broken == "checkpoint ignored":  # starts over (and ends with the same bits: weights alone cannot tell)
        fresh = trainer._resume_or_initialise
        monkeypatch.setattr(trainer, "_resume_or_initialise", lambda config, *args: fresh(
            dataclasses.replace(config, output_dir=str(tmp_path / "nowhere")), *args))
    else:
        monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    updates = _count_steps(monkeypatch)
    train(interrupted)
    with pytest.raises(AssertionError):
        _check_resumed(tmp_path / "a", tmp_path / "b", len(updates), 4)


DDP_SCRIPT = """
import json, os, sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.optimizer import register_optimizer_step_pre_hook
from gridattn.train import TrainConfig, train
from gridattn.models import hmanet_config

out, data, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if options.get("reduce") == "sum":  # a broken all-reduce (sum instead of mean), for the negative control
    def summed(state, bucket):
        return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0])
    build = DistributedDataParallel.__init__
    def with_sum(self, *args, **kwargs):
        build(self, *args, **kwargs)
        self.register_comm_hook(None, summed)
    DistributedDataParallel.__init__ = with_sum
grads = []  # per update: the all-reduced gradients, then the clipped ones the update uses
clip = torch.nn.utils.clip_grad_norm_
def record_and_clip(parameters, max_norm):
    parameters = list(parameters)
    grads.append([p.grad.clone() for p in parameters])
    return clip(parameters, max_norm)
torch.nn.utils.clip_grad_norm_ = record_and_clip
def record(optimizer, args, kwargs):
    grads.append([p.grad.clone() for p in optimizer.param_groups[0]["params"]])
register_optimizer_step_pre_hook(record)
model = hmanet_config(2, "tiny").replace(embed_dim=16, depths=(2,), num_heads=(2,),
                                         drop_path_rate=options.get("drop_path", 0.0))
train(TrainConfig(output_dir=out, model=model, data=(data,), iterations=options.get("iterations", 3), batch_size=4,
                  patch_size=16, grad_clip=options.get("grad_clip", 0.05), ema_decay=0.5, checkpoint_every=1,
                  log_every=1, progress=False, max_steps=options.get("max_steps"),
                  bf16=False))  # float32: bfloat16 rounding depends on how the batch is split
rank = int(os.environ.get("RANK", "0"))
torch.save(grads, os.path.join(out, f"grads-{rank}.pt"))
"""


def _ddp_run(tmp_path, image_folder, name: str, processes: int, **options) -> dict:
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-port",
        str(29500 + (os.getpid() + len(name)) % 1000)]
    done = subprocess.run([*launcher, script, tmp_path / name, image_folder, json.dumps(options)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state = torch.load(tmp_path / name / "last.pt", weights_only=True)
    grads = [torch.load(tmp_path / name / f"grads-{rank}.pt", weights_only=True) for rank in range(processes)]
    return {"grads": grads[0], "grads_by_rank": grads, **state}


def _check_same_training(one: dict, two: dict) -> None:
    """Every update's gradients (all-reduced, then clipped), the weights and the EMA agree within float
    tolerance."""
    assert len(one["grads"]) == len(two["grads"]) == 2 * 3
    for index, (a, b) in enumerate(zip(one["grads"], two["grads"])):
        for i, (ga, gb) in enumerate(zip(a, b)):
            what = f"step {index // 2} {'clipped' if index % 2 else 'all-reduced'}, parameter {i}"
            torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6, msg=what)
    for part in ("model", "ema"):
        for key in one[part]:
            torch.testing.assert_close(two[part][key], one[part][key], rtol=1e-4, atol=1e-5, msg=f"{part} {key}")


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(image_folder, tmp_path):
    """Two gloo processes with half the batch each give one process's gradients (compared before every Adam
    update, clipping on, since Adam alone would hide a wrong gradient scale), weights and EMA."""
    one = _ddp_run(tmp_path, image_folder, "one", 1)
    _check_same_training(one, _ddp_run(tmp_path, image_folder, "two", 2))


def test_the_ddp_check_fails_for_an_all_reduce_that_sums(image_folder, tmp_path):
    """Negative control: summing instead of averaging the gradients over the processes fails the check."""
    one = _ddp_run(tmp_path, image_folder, "one", 1)
    with pytest.raises(AssertionError, match="step 0 all-reduced"):
        _check_same_training(one, _ddp_run(tmp_path, image_folder, "sum", 2, reduce="sum"))


def test_ddp_with_drop_path_draws_other_masks_per_process_and_resumes_exactly(image_folder, tmp_path):
    """Drop-path on: each process has a random stream of its own (the same seed everywhere would drop the same
    samples of every process's share), and a DDP run stopped after 2 of 4 steps and resumed ends with the
    uninterrupted run's weights, EMA and per-process random states."""
    whole = _ddp_run(tmp_path, image_folder, "whole", 2, drop_path=0.3, iterations=4)
    processes = whole["rng"]["processes"]
    assert len(processes) == 2 and not torch.equal(processes[0]["torch"], processes[1]["torch"])
    _ddp_run(tmp_path, image_folder, "split", 2, drop_path=0.3, iterations=4, max_steps=2)
    split = _ddp_run(tmp_path, image_folder, "split", 2, drop_path=0.3, iterations=4)
    assert split["step"] == whole["step"] == 4
    for part in ("model", "ema"):
        assert all(torch.equal(whole[part][k], split[part][k]) for k in whole[part]), part
    assert all(torch.equal(a["torch"], b["torch"]) for a, b in zip(processes, split["rng"]["processes"]))


def test_recipes_follow_the_paper_and_validate_their_order():
    from gridattn.train import OFFICIAL, TINY, Recipe, Stage

    for recipe in (OFFICIAL, TINY):
        assert [s.scale for s in recipe.stages] == [2, 3, 2, 4, 2, 3, 4]
        assert [s.init_from is None for s in recipe.stages] == [True] + [False] * 6
        assert recipe.stage(recipe.stages[3].init_from).scale == 3  # x4 starts from the x3 model
        assert all(s.patch_size % hmanet_config(s.scale, recipe.model).pad_multiple == 0 for s in recipe.stages)
    assert OFFICIAL.stages[0].iterations == 800_000
    assert OFFICIAL.stages[0].milestones == (300_000, 500_000, 650_000, 700_000, 750_000)
    assert OFFICIAL.stages[-1].lr == 5e-6 and OFFICIAL.stages[-1].iterations == 250_000
    with pytest.raises(ValueError, match="does not run before it"):
        Recipe("bad", "tiny",
               (Stage("a", 2, ("pretrain",), 1, 1e-3, init_from="b"), Stage("b", 3, ("pretrain",), 1, 1e-3)))
    with pytest.raises(ValueError, match="used twice"):
        Recipe("bad", "tiny", (Stage("a", 2, ("pretrain",), 1, 1e-3), Stage("a", 3, ("pretrain",), 1, 1e-3)))


def test_scratch_control_repeats_a_stage_from_random_weights():
    from gridattn.train import TINY

    recipe = TINY.with_scratch_control("x4_from_x3")
    staged, control = recipe.stage("x4_from_x3"), recipe.stages[-1]
    assert control.name == "x4_from_x3_scratch" and control.init_from is None
    assert dataclasses.replace(control, name=staged.name, init_from=staged.init_from) == staged
    assert recipe.stages[:-1] == TINY.stages
    with pytest.raises(KeyError, match="no stage 'x5'"):
        TINY.with_scratch_control("x5")


def test_output_to_a_file_gets_plain_lines_not_bar_refreshes(image_folder, tmp_path):
    """As under a batch scheduler: stderr is a file, so no tqdm bar (carriage returns) but one plain line for the
    first log row and for the last (the lines are at least 30 s apart in between)."""
    config = _config(tmp_path / "run", image_folder, iterations=5, progress=True).to_dict()
    with open(tmp_path / "stderr.txt", "w") as stderr:
        done = subprocess.run([sys.executable, "-c", RUNNER.format(config=config)], stderr=stderr,
                              stdout=subprocess.PIPE, text=True)
    log = (tmp_path / "stderr.txt").read_text()
    assert done.returncode == 0, log
    assert "\r" not in log and "%|" not in log
    lines = [line for line in log.splitlines() if line.startswith("step ")]
    assert len(lines) == 2, log
    for line, step in zip(lines, (1, 5)):
        assert re.fullmatch(rf"step {step}/5 loss \d\.\d{{4}} lr \d\.\d\de-\d\d [\d.]+ steps/s ETA \d+m\d\ds",
                            line), line
    assert re.search(r"model \(EMA weights\) \S+model.safetensors", done.stdout)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch gridattn-pwned",))


@pytest.mark.parametrize("where", ["resume", "init_from"])
def test_the_trainer_refuses_checkpoints_that_would_run_code(image_folder, tmp_path, monkeypatch, where):
    """A last.pt to resume from, or a checkpoint to start from, that unpickles into code: refused, never run."""
    from gridattn.models import CheckpointError

    monkeypatch.chdir(tmp_path)
    hostile = tmp_path / "run" / "last.pt" if where == "resume" else tmp_path / "other" / "last.pt"
    hostile.parent.mkdir()
    torch.save({"step": 3, "model": _RunsCode(), "ema": {}, "config": {}}, hostile)
    config = _config(tmp_path / "run", image_folder, init_from=str(hostile.parent) if where == "init_from" else None)
    with pytest.raises(CheckpointError, match="cannot (resume from|read checkpoint)"):
        train(config)
    assert not (tmp_path / "gridattn-pwned").exists()


def test_resume_refuses_a_checkpoint_of_other_settings(image_folder, tmp_path):
    """A run resumed with another numerics mode (or learning rate) is refused, naming each difference; the same
    settings resume."""
    train(_config(tmp_path, image_folder, iterations=2))
    other = _config(tmp_path, image_folder, iterations=2, model=MICRO.replace(drop_path_rate=0.1, numerics="official"))
    with pytest.raises(CheckpointError, match=r"other settings: model \(numerics: saved 'corrected', now 'official'\)"):
        train(other)
    with pytest.raises(CheckpointError, match=r"lr: saved 0.0002, now 0.001"):
        train(_config(tmp_path, image_folder, iterations=2, lr=1e-3))
    train(_config(tmp_path, image_folder, iterations=2, max_steps=1))  # same run: resumes (nothing left to do)


def test_a_trainer_checkpoint_of_gridattn_0_2_still_loads_and_resumes(image_folder, tmp_path):
    """Checkpoints whose configuration has version 1 (no ``arch``) kept the upsampler at the top level
    (``upsample.0.weight``); they load and resume under today's module names."""
    from gridattn.models import load_model

    train(_config(tmp_path, image_folder, iterations=2))
    path = tmp_path / "last.pt"
    state = torch.load(path, weights_only=True)
    old = {k.removeprefix("reconstruction."): v for k, v in state["model"].items()}
    assert "upsample.0.weight" in old
    model_config = {k: v for k, v in state["config"]["model"].items() if k not in ("arch", "upsampler",
                                                                                   "resi_connection")}
    state.update(model=old, ema={k.removeprefix("reconstruction."): v for k, v in state["ema"].items()},
                 config={**state["config"], "model": {**model_config, "version": 1}})
    torch.save(state, path)
    loaded = load_model(path, weights="model")
    assert loaded.config == MICRO.replace(drop_path_rate=0.1)
    assert torch.equal(loaded.state_dict()["reconstruction.upsample.0.weight"], old["upsample.0.weight"])
    train(_config(tmp_path, image_folder, iterations=3))  # resumes the old checkpoint
    assert torch.load(path, weights_only=True)["step"] == 3


@pytest.mark.parametrize("pays, bf16, expected", [(True, True, True), (False, True, False), (True, False, False)])
def test_bfloat16_autocast_where_it_pays_with_float32_weights_and_loss(image_folder, tmp_path, monkeypatch, pays,
                                                                        bf16, expected):
    """The trainer asks bfloat16_pays (faked both ways) and honours bf16=False; the model's products run under
    autocast (seen from inside the step), while the loss, weights and EMA stay float32."""
    import gridattn.train.trainer as trainer

    monkeypatch.setattr(trainer, "bfloat16_pays", lambda device: pays)
    seen, step = [], trainer._step

    def recording(net, optimizer, lr_batch, hr_batch, lr, autocast, grad_clip):
        with autocast:
            seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        loss = step(net, optimizer, lr_batch, hr_batch, lr, autocast, grad_clip)
        assert loss.dtype == torch.float32
        return loss

    monkeypatch.setattr(trainer, "_step", recording)
    train(_config(tmp_path, image_folder, iterations=2, device="cpu", bf16=bf16))
    assert seen == [expected, expected]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {v.dtype for part in ("model", "ema") for v in state[part].values() if v.is_floating_point()} == {
        torch.float32}
