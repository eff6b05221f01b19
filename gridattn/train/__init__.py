"""Training: on-the-fly paired data, the trainer, EMA, scale transfer and the staged recipe."""

from .dataset import PairedDataset, find_images
from .ema import ModelEMA
from .recipe import OFFICIAL, Recipe, Stage
from .trainer import TrainConfig, evaluate_model, lr_at, train
from .transfer import TransferReport, transfer_weights

__all__ = [
    "OFFICIAL",
    "ModelEMA",
    "PairedDataset",
    "Recipe",
    "Stage",
    "TrainConfig",
    "TransferReport",
    "evaluate_model",
    "find_images",
    "lr_at",
    "train",
    "transfer_weights",
]
