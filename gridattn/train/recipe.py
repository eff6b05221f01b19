"""HMANet's staged pre-training recipe as data: a list of stages, each possibly initialised from another.

Paper (DESIGN section 3): train x2 on ImageNet; initialise x3 from it and train; initialise x2 and x4 from the
x3 model and train; fine-tune every scale on DF2K. Official hyper-parameters: L1 loss, Adam (0.9, 0.99),
lr 2e-4, 800k iterations with MultiStepLR milestones [300k, 500k, 650k, 700k, 750k] and gamma 0.5, batch
32 (4 per GPU on 8 GPUs), EMA 0.999, LR patches 64x64; fine-tune lr 5e-6 for 250k iterations with
milestones [125k, 200k, 225k, 240k].
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stage:
    """One training run of the recipe.

    Attributes:
        name: unique name, used for the output folder and by ``init_from``.
        scale: 2, 3 or 4.
        data: names of data sets (keys of the data map given to the runner) or folders.
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
    """A model preset (``gridattn.models.hmanet_config`` size) and its stages, in running order."""

    name: str
    model: str
    stages: tuple[Stage, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"recipe {self.name}: stage name {stage.name!r} is used twice")
            if stage.init_from is not None and stage.init_from not in seen:
                raise ValueError(f"recipe {self.name}: stage {stage.name!r} starts from {stage.init_from!r}, which does not run before it")
            seen.add(stage.name)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


_PRETRAIN = dict(iterations=800_000, lr=2e-4, milestones=(300_000, 500_000, 650_000, 700_000, 750_000))
_FINETUNE = dict(iterations=250_000, lr=5e-6, milestones=(125_000, 200_000, 225_000, 240_000))

OFFICIAL = Recipe(
    name="official",
    model="official",
    stages=(
        Stage("x2_imagenet", 2, ("imagenet",), **_PRETRAIN),
        Stage("x3_imagenet", 3, ("imagenet",), init_from="x2_imagenet", **_PRETRAIN),
        Stage("x2_imagenet_from_x3", 2, ("imagenet",), init_from="x3_imagenet", **_PRETRAIN),
        Stage("x4_imagenet", 4, ("imagenet",), init_from="x3_imagenet", **_PRETRAIN),
        # the official fine-tunes crop 128 HR pixels: LR 64 at x2, 32 at x4, and 42.7 at x3, which cannot run;
        # x3 uses LR 48 here (the nearest multiple of 16)
        Stage("x2_df2k", 2, ("df2k",), init_from="x2_imagenet_from_x3", patch_size=64, **_FINETUNE),
        Stage("x3_df2k", 3, ("df2k",), init_from="x3_imagenet", patch_size=48, **_FINETUNE),
        Stage("x4_df2k", 4, ("df2k",), init_from="x4_imagenet", patch_size=32, **_FINETUNE),
    ),
)
