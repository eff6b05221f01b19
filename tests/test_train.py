"""Training: data alignment, scale transfer, EMA, schedule, exact resume after a kill, DDP equivalence."""

import dataclasses
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
from gridattn.models import HMANet, hmanet_config
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
        if key.startswith("upsample."):
            assert torch.equal(value, before[key]) and "upsampler" in report.skipped[key]
        else:
            assert torch.equal(value, source.state_dict()[key]) and key in report.copied
    assert {k for k in report.skipped if k.startswith("upsample.")} == (
        {k for k in source.state_dict() if k.startswith("upsample.")} | {k for k in after if k.startswith("upsample.")}
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


def test_resume_after_a_kill_gives_the_uninterrupted_weights(image_folder, tmp_path):

    uninterrupted = _config(tmp_path / "a", image_folder, iterations=20)
    train(uninterrupted)
    interrupted = _config(tmp_path / "b", image_folder, iterations=20)
    spec = interrupted.to_dict()
    process = subprocess.Popen([sys.executable, "-c", RUNNER.format(config=spec)])
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
    train(interrupted)  # resumes from last.pt
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(checkpoint, weights_only=True)
    assert b["step"] == a["step"] == 20
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


DDP_SCRIPT = """
import sys
from gridattn.train import TrainConfig, train
from gridattn.models import hmanet_config
model = hmanet_config(2, "tiny").replace(embed_dim=16, depths=(2,), num_heads=(2,), drop_path_rate=0.0)
train(TrainConfig(output_dir=sys.argv[1], model=model, data=(sys.argv[2],), iterations=3, batch_size=4,
                  patch_size=16, checkpoint_every=3, log_every=1, progress=False))
"""


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(image_folder, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, script, tmp_path / "one", image_folder], env=env, capture_output=True,
                            text=True)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                             str(29500 + os.getpid() % 1000), script, tmp_path / "two", image_folder],
                            env=env, capture_output=True, text=True)
    assert double.returncode == 0, double.stderr
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


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
