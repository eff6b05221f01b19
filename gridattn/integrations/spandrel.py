"""HMANet in spandrel: detection of HMANet checkpoints by ``spandrel.ModelLoader``, loading gridattn's model.

spandrel (chaiNNer-org/spandrel, the model loader of chaiNNer and ComfyUI) recognises an architecture from the
keys of a state dict and reads its hyper-parameters off tensor shapes. This module adds HMANet to a spandrel
registry::

    import spandrel
    from gridattn.integrations.spandrel import register

    register()                                            # adds HMANet to spandrel.MAIN_REGISTRY (idempotent)
    descriptor = spandrel.ModelLoader().load_from_file("HMA_SRx4.pth")
    descriptor.architecture.id, descriptor.scale          # ("HMANet", 4)
    sr = descriptor(image)                                # (1, 3, H, W) in [0, 1] -> (1, 3, 4H, 4W), clamped

The model inside the descriptor (``descriptor.model``) is :class:`gridattn.models.HMANet`, configured by
:func:`gridattn.models.hmanet_layout.infer_config` and filled through the official layout (strict: a checkpoint
that does not fit exactly raises :class:`~gridattn.models.CheckpointError` listing missing, unexpected and
mis-shaped keys). spandrel's own SwinIR and HAT are left alone: only HMANet is registered here. Files from neosr
have the official keys; spandrel cannot tell them apart, so they load with the official RGB mean (use
:func:`load_descriptor` with ``layout="neosr"``).

What spandrel passes on is only the state dict: it unwraps ``params_ema`` / ``params`` itself, drops every
other top-level entry and ignores safetensors metadata. :func:`~gridattn.models.save_hmanet` therefore also
writes a model's configuration into ``.safetensors`` files as a tensor entry ``gridattn_config``, which this
architecture reads: such files load through spandrel with their numerics mode, image skip and interval.
``.pth`` files written by ``save_hmanet`` keep the configuration beside ``params_ema`` (so that the official
code loads them strictly), which spandrel drops: they are configured from their weights alone, as official
checkpoints (official numerics, no image skip, interval 4), which is right only for such models.
:func:`load_descriptor` reads any of these files with gridattn's reader and keeps the configuration.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch

try:
    from spandrel import (
        MAIN_REGISTRY,
        Architecture,
        ArchRegistry,
        ArchSupport,
        ImageModelDescriptor,
        ModelTiling,
        SizeRequirements,
        StateDict,
    )
except ImportError as error:  # pragma: no cover - exercised only without spandrel
    raise ImportError(
        "gridattn.integrations.spandrel needs spandrel: pip install 'gridattn[spandrel]' (spandrel imports "
        "torchvision, which must match the installed torch)"
    ) from error

from ..models import hmanet_layout
from ..models.checkpoint import hmanet_from_state_dict, load_hmanet
from ..models.hmanet import HMANet, HMANetConfig

__all__ = ["ARCHITECTURE", "ARCH_ID", "HMANetArch", "detect", "load_descriptor", "register"]

ARCH_ID = "HMANet"



def detect(state: StateDict) -> bool:
    """Whether ``state`` has the keys of HMANet's official layout (the layout's own signature:
    :data:`gridattn.models.hmanet_layout.OFFICIAL`). They are HMANet's alone: HAT, ATD and SwinIR share the
    ``layers.N.residual_group`` / ``conv_first`` naming, but none has a FusedConv as block 0 or a GAB with grid
    attention (checked against spandrel's MAIN_REGISTRY in tests/test_spandrel.py)."""
    return hmanet_layout.OFFICIAL.matches(state)


def _tags(config: HMANetConfig) -> list[str]:
    depths = "-".join(str(d) for d in config.depths)
    tags = [f"{config.embed_dim}dim", f"depths{depths}", f"w{config.window_size}i{config.interval}",
            f"{config.upsample_features}nf", f"{config.numerics} numerics"]
    if config.image_skip:
        tags.append("image skip")
    return tags


class HMANetArch(Architecture[HMANet]):
    """spandrel architecture of HMANet checkpoints in the official layout (gridattn's :class:`HMANet`)."""

    def __init__(self) -> None:
        super().__init__(id=ARCH_ID, name="HMANet", detect=detect)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[HMANet]:
        """Configure and fill an :class:`HMANet` from ``state_dict`` (official layout, already unwrapped).

        A ``gridattn_config`` entry in the dict (safetensors files written by :func:`save_hmanet` carry one as
        a tensor) configures the model; otherwise :func:`infer_config` reads the configuration off the
        shapes. Raises :class:`CheckpointError` when the weights do not fit.
        """
        return self.descriptor(hmanet_from_state_dict(state_dict))

    def descriptor(self, model: HMANet) -> ImageModelDescriptor[HMANet]:
        """The spandrel descriptor of a gridattn HMANet (its weights as they are)."""
        config = model.config
        descriptor = ImageModelDescriptor(
            model,
            model.state_dict(),
            architecture=self,
            purpose="SR",
            tags=_tags(config),
            # fp16: runs on small random models but is unchecked on trained HMANet weights, whose activations may
            # exceed fp16's range; spandrel marks the related window-attention SR transformers (HAT, SwinIR, DAT,
            # ATD, DRCT) as not supporting it. bfloat16 has float32's range and runs (checked in the tests).
            supports_half=False,
            supports_bfloat16=True,
            scale=config.scale,
            input_channels=config.in_channels,
            output_channels=config.in_channels,
            # any height and width: the model pads to its window / interval multiple itself and crops
            size_requirements=SizeRequirements(),
            tiling=ModelTiling.SUPPORTED,
        )
        model.eval()
        return descriptor


ARCHITECTURE = HMANetArch()
"""The architecture instance that :func:`register` adds and :func:`load_descriptor` names."""


def _is_ours(support: ArchSupport) -> bool:
    cls = type(support.architecture)  # by name, so that a reloaded module still counts as the same
    return cls.__module__ == HMANetArch.__module__ and cls.__qualname__ == HMANetArch.__qualname__


def register(registry: ArchRegistry | None = None) -> ArchSupport:
    """Add HMANet to ``registry`` (spandrel's ``MAIN_REGISTRY`` when ``None``) and return its entry.

    HMANet is placed before every architecture already in the registry in detection order (but those that
    ask to come before it), so that no broader detector claims an HMANet checkpoint first; its own detector
    needs HMANet-only keys and claims nothing else. Idempotent: once registered, a second call changes nothing
    and returns the same entry. If the
    registry holds another architecture under the id ``"HMANet"``, that one is kept, with a warning.
    """
    if registry is None:
        registry = MAIN_REGISTRY
    existing = registry.get(ARCH_ID)
    if existing is not None:
        if not _is_ours(existing):
            warnings.warn(
                f"the spandrel registry already has an architecture {ARCH_ID!r} "
                f"({type(existing.architecture).__module__}); gridattn's HMANet was not registered",
                RuntimeWarning,
                stacklevel=2,
            )
        return existing
    # every architecture already there, but those that ask to come before HMANet (that would be a cycle)
    others = tuple(support.architecture.id for support in registry.architectures("insertion")
                   if ARCH_ID not in support.before)
    registry.add(ArchSupport.from_architecture(ARCHITECTURE, before=others), ignore_duplicates=True)
    return registry[ARCH_ID]


def load_descriptor(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    map_location: str | torch.device = "cpu",
    layout: str | None = None,
) -> ImageModelDescriptor[HMANet]:
    """A spandrel descriptor of the HMANet in ``source``, read by gridattn (no detection, no registry needed).
    ``layout="neosr"`` reads an HMA file trained with neosr (see :func:`~gridattn.models.load_model`).

    Unlike ``spandrel.ModelLoader``, this keeps the ``gridattn_config`` stored by :func:`save_hmanet` (numerics,
    image skip, interval) and reads ``.safetensors`` metadata; otherwise the same as :meth:`HMANetArch.load`:
    official checkpoints (bare, ``params_ema``, ``params``) are configured from their shapes.
    """
    return ARCHITECTURE.descriptor(load_hmanet(source, map_location=map_location, layout=layout))
