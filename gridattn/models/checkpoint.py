"""HMANet's file functions of gridattn 0.2, kept as thin wrappers over the model interface
(:func:`~gridattn.models.load_model`, :func:`~gridattn.models.save_model`, :mod:`gridattn.models.layout`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from .._errors import CheckpointError
from . import hmanet_layout
from .files import StoredWeights, Weights, load_model, model_from_weights, save_model
from .hmanet import HMANet
from .layout import from_layout, to_layout

infer_config = hmanet_layout.infer_config


def to_official_state_dict(model: HMANet) -> dict[str, torch.Tensor]:
    """The model's weights in the official layout (loadable by the official ``HMANet`` with strict=True).

    The official code then reproduces this model's outputs only for ``numerics="official"`` and
    ``image_skip=False``: it has neither the corrected GAB branch nor the bicubic image skip.
    """
    return to_layout(model, hmanet_layout.OFFICIAL)


def from_official_state_dict(model: HMANet, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert an official-layout state dict to ``model``'s layout, strictly
    (:func:`~gridattn.models.layout.from_layout`)."""
    return from_layout(model, state, hmanet_layout.OFFICIAL)


def load_hmanet(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    map_location: str | torch.device = "cpu",
    scale: int | None = None,
    weights: Weights = "ema",
    layout: str | None = None,
) -> HMANet:
    """:func:`~gridattn.models.load_model` for HMANet files only (``arch="hmanet"``): official releases, neosr's
    files (``layout="neosr"``), gridattn's files, trainer checkpoints and stage folders.

    Raises:
        CheckpointError, FileNotFoundError, ValueError: as :func:`~gridattn.models.load_model`.

    Example:
        >>> model = load_hmanet("HMA_SRx4.pth", scale=4)  # the released checkpoint   # doctest: +SKIP
    """
    model = load_model(source, map_location=map_location, scale=scale, weights=weights, layout=layout,
                       arch="hmanet")
    if not isinstance(model, HMANet):
        raise CheckpointError(f"not an HMANet checkpoint: it holds a {model.config.arch} model")
    return model


def hmanet_from_state_dict(state: Mapping[str, Any], config: Any = None) -> HMANet:
    """Build and fill an HMANet from an official-layout state dict (already unwrapped from ``params_ema``).

    The configuration is ``config``, else a ``gridattn_config`` entry of ``state``, else read off the shapes
    (official numerics; the layout assumed is said in a :class:`~gridattn.models.LayoutAssumedWarning`).
    """
    stored = {k: v for k, v in state.items() if k != "gridattn_config"}
    config = state.get("gridattn_config") if config is None else config
    return model_from_weights(StoredWeights(stored, config, official_layout=True), arch="hmanet")


def save_hmanet(model: HMANet, path: str | os.PathLike) -> None:
    """:func:`~gridattn.models.save_model` for an HMANet."""
    if not isinstance(model, HMANet):
        raise TypeError(f"save_hmanet saves a gridattn HMANet, got {type(model).__name__}")
    save_model(model, path)
