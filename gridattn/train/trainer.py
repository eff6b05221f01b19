"""Training one model (any registered architecture): L1, Adam, MultiStepLR, EMA, validation, logs, atomic
checkpoints, exact resume, DDP.

Single process: ``train(TrainConfig(...))``. Several processes or machines: launch the same script with
``torchrun --nproc-per-node N script.py``; the trainer joins the process group torchrun describes (NCCL on CUDA,
gloo on CPU), splits the global batch over the processes and writes from rank 0 only.

Exact resume: item ``i`` of the dataset depends only on ``(seed, i)`` and the trainer consumes items
``step * batch ... (step + 1) * batch - 1``; a checkpoint holds the model, EMA, optimiser, step and RNG states, so
a run killed at any step and resumed from its last checkpoint ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from .._errors import CheckpointError, one_line
from ..evaluation import evaluate
from ..functional.precision import bfloat16_pays
from ..models.config import ModelConfig
from ..models.files import STAGE_MODEL_FILE, TRAINER_CHECKPOINT_FILE, load_model, save_model
from ..models.registry import build_model, config_from_dict, get_architecture
from .dataset import PairedDataset
from .ema import ModelEMA
from .transfer import transfer_weights


@dataclass
class TrainConfig:
    """One training run. ``batch_size`` is global (split over processes); steps count optimiser updates."""

    output_dir: str
    model: ModelConfig
    data: tuple[str, ...]
    iterations: int
    lr: float = 2e-4
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    batch_size: int = 32
    patch_size: int = 64
    ema_decay: float = 0.999
    grad_clip: float | None = None
    init_from: str | None = None  # a checkpoint of this trainer (its EMA weights) or of gridattn/official layout
    lr_data: tuple[str, ...] | None = None
    val_hr: str | None = None
    validate_every: int = 0  # 0: only at the end
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str | None = None  # default: cuda when available
    bf16: bool = True  # autocast to bfloat16 where it pays (functional.bfloat16_pays: CUDA, CPUs with bf16 units)
    grad_checkpointing: bool = False
    tensorboard: bool = False
    num_workers: int = 0
    max_steps: int | None = None  # stop this process after so many steps (a later run resumes)
    progress: bool = True

    def to_dict(self) -> dict:
        """JSON-ready values; ``model`` as :meth:`~gridattn.models.ModelConfig.to_dict` (what trainer checkpoints
        store)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return {**values, "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The configuration :meth:`to_dict` encoded."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**{**values, "model": config_from_dict(data["model"])})


def lr_at(config: TrainConfig, step: int) -> float:
    """MultiStepLR in closed form: ``lr * gamma ** (milestones passed)`` for the update after ``step`` steps."""
    return config.lr * config.gamma ** sum(step >= m for m in config.milestones)


class _Indices(Sampler[int]):
    """Dataset indices for steps ``start .. end - 1`` of this process: ``step * batch + rank * local + j``."""

    def __init__(self, start: int, end: int, batch: int, rank: int, local: int) -> None:
        self.start, self.end, self.batch, self.rank, self.local = start, end, batch, rank, local

    def __iter__(self):
        for step in range(self.start, self.end):
            base = step * self.batch + self.rank * self.local
            yield from range(base, base + self.local)

    def __len__(self) -> int:
        return (self.end - self.start) * self.local


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a file beside ``path`` (same suffix: the writers pick their format by it), then rename it
    over ``path``: a kill during the write leaves the previous file intact."""
    partial = path.with_name("partial-" + path.name)
    write(partial)
    os.replace(partial, path)


def _initial_weights(path: str) -> tuple[dict[str, torch.Tensor], int]:
    """(EMA weights of a trainer checkpoint, stage folder or gridattn / official checkpoint; their scale)."""
    model = load_model(path)
    return model.state_dict(), model.config.scale


@dataclass
class _Processes:
    """Where this process runs and its share of the global batch."""

    world: int
    rank: int
    device: torch.device
    local_batch: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def _join_processes(config: TrainConfig) -> _Processes:
    """Read torchrun's environment, join its process group (NCCL on CUDA, gloo on CPU), split the batch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} does not split over {world} processes")
    return _Processes(world, rank, device, config.batch_size // world)


def _rng_state(device: torch.device) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def _own_random_stream(config: TrainConfig, rank: int) -> None:
    """Process ``rank`` > 0 draws drop-path masks from a stream of its own (rank 0 keeps the one seeded by
    ``config.seed``, so one process trains as before): with one seed everywhere, every process would drop the
    same samples of its share of the batch."""
    if rank:
        torch.manual_seed(config.seed + 1_000_003 * rank)


def _gathered_rng(device: torch.device, procs: _Processes) -> dict:
    """Rank 0's RNG states, plus under DDP every process's (``processes``, by rank; a collective call)."""
    own = _rng_state(device)
    if procs.world == 1:
        return own
    states: list = [None] * procs.world
    dist.all_gather_object(states, own)
    return {**own, "processes": states}


RUN_FIELDS = ("model", "data", "lr_data", "lr", "milestones", "gamma", "batch_size", "patch_size",
              "ema_decay", "grad_clip", "seed", "bf16", "init_from")
"""The fields of a :class:`TrainConfig` that a resumed run must share with the run that saved the checkpoint
(``iterations`` may grow: a run can be extended)."""


def _check_same_run(config: TrainConfig, saved: dict | None, path: Path) -> None:
    """Refuse to resume another run's checkpoint: name every field of :data:`RUN_FIELDS` that differs."""
    if saved is None:
        return
    ours = config.to_dict()
    if "model" in saved:  # compare decoded configurations: older encodings of the same model are the same run
        try:
            saved = {**saved, "model": config_from_dict(saved["model"]).to_dict()}
        except ValueError as error:
            raise CheckpointError(f"cannot resume from {path}: its model configuration is not valid ({error})") \
                from None
    differences = []
    for name in RUN_FIELDS:
        if name in saved and saved[name] != ours[name]:
            if name == "model":
                fields = sorted(k for k in ours["model"] if saved["model"].get(k) != ours["model"][k])
                changed = ", ".join(f"{k}: saved {saved['model'].get(k)!r}, now {ours['model'][k]!r}" for k in fields)
                differences.append(f"model ({changed})")
            else:
                differences.append(f"{name}: saved {saved[name]!r}, now {ours[name]!r}")
    if differences:
        raise CheckpointError(f"cannot resume from {path}: it was saved by a run with other settings: "
                              f"{'; '.join(differences)}. Resume with the same settings, or use another output folder")


def _resume_or_initialise(config: TrainConfig, model: nn.Module, optimizer, device: torch.device,
                          procs: _Processes) -> tuple[int, ModelEMA]:
    """Restore model, optimiser, step, RNG and EMA from the output folder's checkpoint if there is one, else
    start from ``init_from``'s weights (or the model as built); return (step, EMA)."""
    checkpoint_path = Path(config.output_dir) / TRAINER_CHECKPOINT_FILE
    if not checkpoint_path.is_file():
        if config.init_from:
            weights, source_scale = _initial_weights(config.init_from)
            report = transfer_weights(weights, model, same_scale=source_scale == config.model.scale,
                                      scale_specific=get_architecture(config.model.arch).scale_specific)
            if procs.main:
                print(f"initialised from {config.init_from}: {report}")
        _own_random_stream(config, procs.rank)
        return 0, ModelEMA(model, config.ema_decay)
    try:  # weights_only: a pickle that would run code is refused, not executed
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot resume from {checkpoint_path}: {one_line(error, first=True)} (remove it to "
                              "start the run over)") from error
    _check_same_run(config, state.get("config"), checkpoint_path)
    migrate = get_architecture(config.model.arch).migrate_own_keys
    if migrate is not None:  # the module names of an older gridattn
        state["model"] = migrate(state["model"], state["config"]["model"])
        state["ema"] = migrate(state["ema"], state["config"]["model"])
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng, processes = state["rng"], state["rng"].get("processes")
    if processes is not None and len(processes) == procs.world:
        rng = processes[procs.rank]
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
    if rng is state["rng"] and procs.rank:  # another number of processes than when saved: a new stream
        _own_random_stream(config, procs.rank)
    ema = ModelEMA(model, config.ema_decay)
    ema.load_state_dict(state["ema"])
    return state["step"], ema


class _RunLog:
    """The run's log: ``log.csv``, optional TensorBoard scalars, and progress on the console.

    On a terminal the progress is a bar; elsewhere (output to a file, as under a batch scheduler) a plain line
    per log row, at most one every :attr:`LINE_SECONDS` seconds, and always the last one, which a cluster
    job's log can be read by.
    """

    FIELDS = ("step", "loss", "lr", "steps_per_s", "val_psnr", "val_ssim", "seconds")
    LINE_SECONDS = 30.0

    def __init__(self, config: TrainConfig, step: int, main: bool) -> None:
        from tqdm.auto import tqdm

        self.path = Path(config.output_dir) / "log.csv"
        self.total, self.first_step = config.iterations, step
        self.writer = None
        if main and config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(Path(config.output_dir) / "tensorboard")
        show = config.progress and main
        self.bar = tqdm(total=config.iterations, initial=step, desc="train", unit="step",
                        disable=not (show and sys.stderr.isatty()))
        self.lines = show and not sys.stderr.isatty()
        self.last_line = -math.inf

    def step(self, loss: torch.Tensor) -> None:
        if not self.bar.disable:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss.item():.4f}")

    def row(self, row: dict, last: bool) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=self.FIELDS)
            if new:
                out.writeheader()
            out.writerow({k: row.get(k, "") for k in self.FIELDS})
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and value != "":
                    self.writer.add_scalar(key, value, row["step"])
        if self.lines and (last or time.monotonic() - self.last_line >= self.LINE_SECONDS):
            self.last_line = time.monotonic()
            print(self._line(row), file=sys.stderr, flush=True)

    def _line(self, row: dict) -> str:
        step, seconds = row["step"], row["seconds"]
        rate = (step - self.first_step) / max(seconds, 1e-9)  # this process's mean
        eta = (self.total - step) / rate if rate > 0 else math.inf
        extra = "".join(f" {k} {row[k]:.4f}" for k in ("val_psnr", "val_ssim") if k in row)
        return (f"step {step}/{self.total} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                f"{rate:.2f} steps/s ETA {_duration(eta)}{extra}")

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _step(net: nn.Module, optimizer, lr_batch: torch.Tensor, hr_batch: torch.Tensor, lr: float, autocast,
          grad_clip: float | None) -> torch.Tensor:
    """One optimiser update of L1 loss at learning rate ``lr``; returns the loss (on the device)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast:
        loss = (net(lr_batch).float() - hr_batch).abs().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()
    return loss


def _save(config: TrainConfig, step: int, model: nn.Module, ema: ModelEMA, optimizer, rng: dict) -> None:
    """The deployable EMA model (``model.safetensors``, :func:`~gridattn.models.save_model`) and the resumable
    checkpoint (``last.pt``: weights, EMA, optimiser, step, RNG states and the configuration)."""
    out = Path(config.output_dir)
    _write_atomic(out / STAGE_MODEL_FILE, lambda path: save_model(ema.module, path))
    state = {"step": step, "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
             "rng": rng, "config": config.to_dict()}
    _write_atomic(out / TRAINER_CHECKPOINT_FILE, lambda path: torch.save(state, path))


def train(config: TrainConfig) -> dict:
    """Run (or resume) training.

    Every ``checkpoint_every`` steps and at the end, the output folder gets ``model.safetensors`` (the EMA
    model, loadable by :func:`~gridattn.models.load_model`, the command line, ONNX export and spandrel) and
    ``last.pt`` (the resumable state); ``log.csv`` gets a row every ``log_every`` steps.

    Returns:
        ``step`` (the last step), ``val_psnr`` / ``val_ssim`` of the EMA model (if ``val_hr``), ``seconds``,
        and the paths ``model`` and ``checkpoint``.
    """
    procs = _join_processes(config)
    device = procs.device
    if procs.main:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    model.grad_checkpointing = config.grad_checkpointing
    dataset = PairedDataset(config.data, config.model.scale, config.patch_size, config.model.pad_multiple,
                            length=config.iterations * config.batch_size, lr_folders=config.lr_data, seed=config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.99))
    step, ema = _resume_or_initialise(config, model, optimizer, device, procs)
    net = DistributedDataParallel(model) if procs.world > 1 else model

    end = config.iterations if config.max_steps is None else min(config.iterations, step + config.max_steps)
    sampler = _Indices(step, end, config.batch_size, procs.rank, procs.local_batch)
    loader = DataLoader(dataset, batch_size=procs.local_batch, sampler=sampler, num_workers=config.num_workers,
                        pin_memory=device.type == "cuda",
                        generator=torch.Generator())  # its own: starting an iterator must not draw from the global RNG
    log = _RunLog(config, step, procs.main)
    # loss, gradients, optimiser and EMA stay float32: autocast runs only the model's products in bfloat16
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16 and bfloat16_pays(device))
    started, last_time, metrics = time.time(), time.time(), {}
    net.train()
    for lr_batch, hr_batch in loader:
        lr_batch, hr_batch = lr_batch.to(device, non_blocking=True), hr_batch.to(device, non_blocking=True)
        loss = _step(net, optimizer, lr_batch, hr_batch, lr_at(config, step), autocast, config.grad_clip)
        ema.update(model)
        step += 1
        log.step(loss)
        if procs.main and (step % config.log_every == 0 or step == end):
            now = time.time()
            row = {"step": step, "loss": loss.item(), "lr": lr_at(config, step - 1),
                   "steps_per_s": config.log_every / max(now - last_time, 1e-9), "seconds": now - started}
            last_time = now
            if config.val_hr and (step == end == config.iterations or
                                  (config.validate_every and step % config.validate_every == 0)):
                scores = evaluate(ema.module, config.val_hr, config.model.scale)
                metrics["val_psnr"], metrics["val_ssim"] = scores.psnr, scores.ssim
                row.update(metrics)
            log.row(row, last=step == end)
        if step % config.checkpoint_every == 0 or step == end:
            rng = _gathered_rng(device, procs)  # every process takes part
            if procs.main:
                _save(config, step, model, ema, optimizer, rng)
    log.close()
    if procs.world > 1:
        dist.barrier()
    out = Path(config.output_dir)
    if procs.main:
        print(f"step {step}/{config.iterations}: model (EMA weights) {out / STAGE_MODEL_FILE}, "
              f"resumable checkpoint {out / TRAINER_CHECKPOINT_FILE}", flush=True)
    return {"step": step, **metrics, "seconds": time.time() - started, "model": str(out / STAGE_MODEL_FILE),
            "checkpoint": str(out / TRAINER_CHECKPOINT_FILE)}
