"""Training: on-the-fly paired data, the trainer, EMA, scale transfer and the staged recipe."""

from .dataset import PairedDataset
from .ema import ModelEMA
from .recipe import OFFICIAL, RECIPES, TINY, Recipe, Stage, StageResult, results_table, run_recipe
from .trainer import TrainConfig, lr_at, train
from .transfer import TransferReport, transfer_weights

__all__ = [
    "OFFICIAL",
    "RECIPES",
    "TINY",
    "ModelEMA",
    "PairedDataset",
    "Recipe",
    "Stage",
    "StageResult",
    "TrainConfig",
    "TransferReport",
    "lr_at",
    "results_table",
    "run_recipe",
    "train",
    "transfer_weights",
]
