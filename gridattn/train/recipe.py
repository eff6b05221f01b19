"""HMANet's staged pre-training recipe (for any registered architecture) as data: a list of stages, each possibly
initialised from another.

Paper (DESIGN section 3): train x2 on ImageNet; initialise x3 from it and train; initialise x2 and x4 from the
x3 model and train; fine-tune every scale on DF2K. Official hyper-parameters: L1 loss, Adam (0.9, 0.99),
lr 2e-4, 800k iterations with MultiStepLR milestones [300k, 500k, 650k, 700k, 750k] and gamma 0.5, batch
32 (4 per GPU on 8 GPUs), EMA 0.999, LR patches 64x64; fine-tune lr 5e-6 for 250k iterations with
milestones [125k, 200k, 225k, 240k].
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation import evaluate
from ..models.files import load_model
from ..models.registry import get_architecture
from .trainer import TrainConfig, train


@dataclass(frozen=True)
class Stage:
    """One training run of the recipe.

    Attributes:
        name: unique name, used for the output folder and by ``init_from``.
        scale: 2, 3 or 4.
        data: names of data sets: keys of the folder map given to :func:`run_recipe` (``"pretrain"``:
            ImageNet in the paper, ``"finetune"``: DF2K).
        iterations: optimiser steps.
        lr: initial learning rate.
        milestones: steps where the learning rate is multiplied by ``gamma``.
        gamma: MultiStepLR factor.
        batch_size: global batch (split over processes).
        patch_size: LR patch size (a multiple of the model's window and interval).
        init_from: the stage whose EMA weights initialise this one (everything but the upsampler), or None.
        ema_decay: EMA of the weights.
    """

    name: str
    scale: int
    data: tuple[str, ...]
    iterations: int
    lr: float
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    batch_size: int = 32
    patch_size: int = 64
    init_from: str | None = None
    ema_decay: float = 0.999


@dataclass(frozen=True)
class Recipe:
    """A model preset (``gridattn.models.hmanet_config`` size) and its stages, in running order.

    ``eval_tile``: tile size of the evaluation after each stage (``None``: whole images, the protocol). Tiles of
    64 with overlap 16 changed Set5+Set14 PSNR by less than 0.001 dB for a tiny model (docs/guides/evaluation.md) and
    keep the grid attention's groups small, which a CPU needs on Set14-sized images.

    Attributes:
        name: the recipe's name (a key of :data:`RECIPES`).
        model: the :func:`~gridattn.models.hmanet_config` preset every stage trains (``"official"``,
            ``"small"``, ``"tiny"``).
        stages: the stages in running order; a stage's ``init_from`` must name an earlier stage.
        eval_tile: tile size of the per-stage evaluation, or ``None``.

    Raises:
        ValueError: two stages with one name, or a stage initialised from a stage that does not run before it.

    Examples:
        >>> from gridattn.train import OFFICIAL, TINY
        >>> [stage.name for stage in TINY.stages][:4]
        ['x2_pretrain', 'x3_pretrain', 'x2_from_x3', 'x4_from_x3']
        >>> OFFICIAL.stage("x4_imagenet").init_from
        'x3_imagenet'
        >>> TINY.with_scratch_control("x4_from_x3").stages[-1].name
        'x4_from_x3_scratch'
    """

    name: str
    model: str
    stages: tuple[Stage, ...] = field(default_factory=tuple)
    eval_tile: int | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"recipe {self.name}: stage name {stage.name!r} is used twice")
            if stage.init_from is not None and stage.init_from not in seen:
                raise ValueError(
                    f"recipe {self.name}: stage {stage.name!r} starts from {stage.init_from!r}, "
                    "which does not run before it"
                )
            seen.add(stage.name)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``.

        Raises:
            KeyError: no such stage (the message lists the stages).
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"recipe {self.name} has no stage {name!r}; its stages are {[s.name for s in self.stages]}")

    def with_scratch_control(self, name: str) -> Recipe:
        """This recipe plus a control stage ``<name>_scratch``: stage ``name`` trained from random weights.

        The control has the same scale, data, steps and schedule, so the two rows of the results table
        measure what the initialisation brings at equal training steps.
        """
        control = dataclasses.replace(self.stage(name), name=f"{name}_scratch", init_from=None)
        return dataclasses.replace(self, stages=(*self.stages, control))


_PRETRAIN = dict(iterations=800_000, lr=2e-4, milestones=(300_000, 500_000, 650_000, 700_000, 750_000))
_FINETUNE = dict(iterations=250_000, lr=5e-6, milestones=(125_000, 200_000, 225_000, 240_000))

OFFICIAL = Recipe(
    name="official",
    model="official",
    stages=(
        Stage("x2_imagenet", 2, ("pretrain",), **_PRETRAIN),
        Stage("x3_imagenet", 3, ("pretrain",), init_from="x2_imagenet", **_PRETRAIN),
        Stage("x2_imagenet_from_x3", 2, ("pretrain",), init_from="x3_imagenet", **_PRETRAIN),
        Stage("x4_imagenet", 4, ("pretrain",), init_from="x3_imagenet", **_PRETRAIN),
        # the official fine-tunes crop 128 HR pixels: LR 64 at x2, 32 at x4, and 42.7 at x3, which cannot run;
        # x3 uses LR 48 here (the nearest multiple of 16)
        Stage("x2_df2k", 2, ("finetune",), init_from="x2_imagenet_from_x3", patch_size=64, **_FINETUNE),
        Stage("x3_df2k", 3, ("finetune",), init_from="x3_imagenet", patch_size=48, **_FINETUNE),
        Stage("x4_df2k", 4, ("finetune",), init_from="x4_imagenet", patch_size=32, **_FINETUNE),
    ),
)


# The same graph of stages at CPU size: short stages, a small model, LR patches of 32, batch 8.
_TINY = dict(batch_size=8, patch_size=32, ema_decay=0.99)
TINY = Recipe(
    name="tiny",
    model="tiny",
    eval_tile=64,
    stages=(
        Stage("x2_pretrain", 2, ("pretrain",), iterations=400, lr=3e-4, milestones=(300,), **_TINY),
        Stage("x3_pretrain", 3, ("pretrain",), iterations=250, lr=3e-4, milestones=(190,), init_from="x2_pretrain",
              **_TINY),
        Stage("x2_from_x3", 2, ("pretrain",), iterations=250, lr=3e-4, milestones=(190,), init_from="x3_pretrain",
              **_TINY),
        Stage("x4_from_x3", 4, ("pretrain",), iterations=250, lr=3e-4, milestones=(190,), init_from="x3_pretrain",
              **_TINY),
        Stage("x2_finetune", 2, ("finetune",), iterations=50, lr=1e-4, init_from="x2_from_x3", **_TINY),
        Stage("x3_finetune", 3, ("finetune",), iterations=50, lr=1e-4, init_from="x3_pretrain", **_TINY),
        Stage("x4_finetune", 4, ("finetune",), iterations=50, lr=1e-4, init_from="x4_from_x3", **_TINY),
    ),
)
RECIPES = {"official": OFFICIAL, "tiny": TINY}
"""The recipes by name (``examples/train_hmanet.py --preset``)."""


@dataclass
class StageResult:
    """What :func:`run_recipe` reports per stage.

    Attributes:
        stage: the stage's name.
        scale: its scale.
        steps: the optimiser steps it ran.
        seconds: training wall time (evaluation excluded).
        scores: evaluation set name -> ``(model PSNR, model SSIM, bicubic PSNR, bicubic SSIM)``, Y channel.
    """

    stage: str
    scale: int
    steps: int
    seconds: float
    scores: dict[str, tuple[float, float, float, float]]  # eval set -> (model PSNR, SSIM, bicubic PSNR, SSIM)


def _capped(stage: Stage, max_steps: int | None) -> Stage:
    """The stage shortened to ``max_steps`` with its milestones scaled alike."""
    if max_steps is None or max_steps >= stage.iterations:
        return stage
    ratio = max_steps / stage.iterations
    return dataclasses.replace(stage, iterations=max_steps,
                               milestones=tuple(max(1, int(m * ratio)) for m in stage.milestones))


def run_recipe(
    recipe: Recipe,
    folders: dict[str, list[str]],
    output_dir: str,
    *,
    eval_sets: dict[str, str] | None = None,
    numerics: str = "corrected",
    arch: str = "hmanet",
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    bf16: bool = True,
) -> list[StageResult]:
    """Run every stage in order (each resumes from its own checkpoint if one exists) and evaluate its EMA model.

    Args:
        recipe: the stages.
        folders: data set name (``"pretrain"``, ``"finetune"``) -> HR image folders.
        output_dir: one sub-folder per stage: ``model.safetensors`` (its EMA model, what later stages start
            from and what to deploy), ``last.pt`` (resumable state), ``log.csv``.
        eval_sets: name -> HR folder, evaluated after each stage (model and MATLAB bicubic, Y-PSNR / SSIM).
        numerics: numerics mode of the trained models.
        arch: the architecture trained (a name of :func:`~gridattn.models.architectures`); the recipe's
            ``model`` preset ``"official"`` stands for the architecture's flagship
            (``flagship`` of :class:`~gridattn.models.Architecture`).
        max_steps: cap on each stage's steps (milestones scaled alike).
        device: ``"cpu"`` or ``"cuda"``; default CUDA when available.
        progress: show progress bars.
        bf16: bfloat16 autocast where it pays (``TrainConfig.bf16``); ``False`` trains in float32.

    Returns:
        One :class:`StageResult` per stage, in running order; :func:`results_table` formats them.

    Raises:
        ValueError: a stage needs a data set that ``folders`` does not name, or any error of the trainer.

    Examples:
        >>> from gridattn.train import TINY, results_table, run_recipe
        >>> results = run_recipe(TINY, {"pretrain": ["photos/"], "finetune": ["photos/"]}, "runs/tiny",
        ...                      eval_sets={"Set5": "Set5/HR"}, max_steps=20)   # doctest: +SKIP
        >>> print(results_table(results))                                       # doctest: +SKIP
    """
    architecture = get_architecture(arch)
    preset = architecture.flagship if recipe.model == "official" else recipe.model
    results = []
    bicubic: dict[tuple[str, int], tuple[float, float]] = {}  # (eval set, scale) -> scores, shared by stages
    for original in recipe.stages:
        stage = _capped(original, max_steps)
        missing = [name for name in stage.data if name not in folders]
        if missing:
            raise ValueError(f"stage {stage.name} needs data {missing}; give folders for them")
        config = TrainConfig(
            output_dir=str(Path(output_dir) / stage.name),
            model=architecture.preset(preset, stage.scale, numerics=numerics),
            data=tuple(f for name in stage.data for f in folders[name]),
            iterations=stage.iterations, lr=stage.lr, milestones=stage.milestones, gamma=stage.gamma,
            batch_size=stage.batch_size, patch_size=stage.patch_size, ema_decay=stage.ema_decay,
            init_from=None if stage.init_from is None else str(Path(output_dir) / stage.init_from),
            checkpoint_every=max(1, min(500, stage.iterations)), log_every=max(1, min(50, stage.iterations)),
            device=device, progress=progress, bf16=bf16,
        )
        print(f"== stage {stage.name}: x{stage.scale}, {stage.iterations} steps"
              + (f", from {stage.init_from}" if stage.init_from else ""), flush=True)
        started = time.time()
        train(config)
        seconds = time.time() - started
        ema = load_model(config.output_dir)  # the stage's model.safetensors
        scores = {}
        for name, hr_folder in (eval_sets or {}).items():
            if (name, stage.scale) not in bicubic:
                baseline = evaluate(None, hr_folder, stage.scale)
                bicubic[name, stage.scale] = (baseline.psnr, baseline.ssim)
            result = evaluate(ema, hr_folder, stage.scale, tile=recipe.eval_tile)
            scores[name] = (result.psnr, result.ssim, *bicubic[name, stage.scale])
        results.append(StageResult(stage.name, stage.scale, stage.iterations, seconds, scores))
    return results


def results_table(results: list[StageResult]) -> str:
    """Markdown table: per stage and evaluation set, model and bicubic PSNR / SSIM, and wall time."""
    lines = ["| stage | scale | steps | eval set | model PSNR / SSIM | bicubic PSNR / SSIM | gain (dB) | time (s) |",
             "| --- | --- | ---: | --- | --- | --- | ---: | ---: |"]
    for r in results:
        for name, (mp, ms, bp, bs) in (r.scores or {"-": (float("nan"),) * 4}).items():
            lines.append(f"| {r.stage} | x{r.scale} | {r.steps} | {name} | {mp:.3f} / {ms:.4f} | {bp:.3f} / {bs:.4f} | "
                         f"{mp - bp:+.3f} | {r.seconds:.0f} |")
    return "\n".join(lines)
