"""Models built from gridattn's blocks."""

from .checkpoint import (
    CheckpointError,
    from_official_state_dict,
    hmanet_from_state_dict,
    infer_config,
    load_hmanet,
    resolve_checkpoint,
    save_hmanet,
    to_official_state_dict,
)
from .hmanet import HMANet, HMANetConfig, hmanet_config, hmanet_x2, hmanet_x3, hmanet_x4

__all__ = [
    "CheckpointError",
    "HMANet",
    "HMANetConfig",
    "from_official_state_dict",
    "hmanet_config",
    "hmanet_from_state_dict",
    "hmanet_x2",
    "hmanet_x3",
    "hmanet_x4",
    "infer_config",
    "load_hmanet",
    "resolve_checkpoint",
    "save_hmanet",
    "to_official_state_dict",
]
