"""Models built from gridattn's blocks, and the one interface every consumer reads them through.

:mod:`~gridattn.models.registry` names the architectures (HMANet, SwinIR, HAT, DAT); :func:`load_model` reads any
of their files, :func:`save_model` writes gridattn's format.
"""

from .._errors import CheckpointError, LayoutAssumedWarning
from . import _builtin  # noqa: F401  (registers HMANet, SwinIR, HAT and DAT)
from .checkpoint import (
    from_official_state_dict,
    hmanet_from_state_dict,
    infer_config,
    load_hmanet,
    save_hmanet,
    to_official_state_dict,
)
from .config import ModelConfig
from .dat import DAT, DATConfig, dat_config
from .files import load_model, resolve_checkpoint, save_model
from .hat import HAT, HATConfig, hat_config
from .hmanet import HMANet, HMANetConfig, hmanet_config, hmanet_x2, hmanet_x3, hmanet_x4
from .registry import Architecture, architecture_of, architectures, build_model, config_from_dict, get_architecture
from .swinir import SwinIR, SwinIRConfig, swinir_config

__all__ = [
    "Architecture",
    "CheckpointError",
    "DAT",
    "DATConfig",
    "HAT",
    "HATConfig",
    "HMANet",
    "HMANetConfig",
    "LayoutAssumedWarning",
    "SwinIR",
    "SwinIRConfig",
    "ModelConfig",
    "architecture_of",
    "architectures",
    "build_model",
    "config_from_dict",
    "dat_config",
    "from_official_state_dict",
    "get_architecture",
    "hat_config",
    "hmanet_config",
    "hmanet_from_state_dict",
    "hmanet_x2",
    "hmanet_x3",
    "hmanet_x4",
    "infer_config",
    "load_hmanet",
    "load_model",
    "resolve_checkpoint",
    "save_hmanet",
    "save_model",
    "swinir_config",
    "to_official_state_dict",
]
