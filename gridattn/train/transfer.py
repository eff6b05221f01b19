"""Initialising a model of one scale from a model of another (the staged recipe's transfers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

# the pixel-shuffle upsampler depends on the scale (x2: one conv 64->256, x4: two, x3: one conv 64->576)
SCALE_SPECIFIC_PREFIXES = ("reconstruction.upsample.",)
"""State-dict key prefixes that depend on the scale and are not transferred between scales (the default of
:func:`transfer_weights`; each architecture names its own in ``scale_specific`` of
:class:`~gridattn.models.Architecture`)."""


@dataclass
class TransferReport:
    """What :func:`transfer_weights` did; ``str(report)`` is a readable summary.

    Attributes:
        copied: the target's keys that received the source's tensor.
        skipped: every key not copied (of the target or the source), mapped to the reason.
    """

    copied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> reason

    def __str__(self) -> str:
        lines = [f"copied {len(self.copied)} tensors, skipped {len(self.skipped)}"]
        lines += [f"  skipped {key}: {reason}" for key, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


def transfer_weights(
    source: Mapping[str, torch.Tensor], target: nn.Module, *, same_scale: bool = False,
    scale_specific: tuple[str, ...] = SCALE_SPECIFIC_PREFIXES,
) -> TransferReport:
    """Copy every tensor of ``source`` (a state dict) into ``target``; the scale-specific upsampler only when
    ``same_scale`` (a fine-tune of the same scale keeps its trained upsampler).

    Tensors missing on either side or of another shape are skipped too, each with its reason; the target
    keeps its own initialisation there.

    Args:
        source: a state dict in gridattn's layout (e.g. ``ema.state_dict()`` of the previous stage).
        target: the model to initialise, modified in place.
        same_scale: also copy the upsampler (a fine-tune of the same scale).
        scale_specific: key prefixes that depend on the scale (the architecture's ``scale_specific``).

    Returns:
        The report of copied and skipped keys.

    Examples:
        >>> from gridattn.models import HMANet, hmanet_config
        >>> from gridattn.train import transfer_weights
        >>> x3, x4 = HMANet(hmanet_config(3, "tiny")), HMANet(hmanet_config(4, "tiny"))
        >>> report = transfer_weights(x3.state_dict(), x4)
        >>> sorted({key.rsplit(".", 2)[0] for key in report.skipped})
        ['reconstruction.upsample']
    """
    report = TransferReport()
    own = target.state_dict()
    updated = {}
    for key, value in own.items():
        if key.startswith(scale_specific) and not same_scale:
            report.skipped[key] = "upsampler (depends on the scale)"
        elif key not in source:
            report.skipped[key] = "not in the source model"
        elif tuple(source[key].shape) != tuple(value.shape):
            report.skipped[key] = f"shape {tuple(source[key].shape)} in the source, {tuple(value.shape)} here"
        else:
            updated[key] = source[key]
            report.copied.append(key)
    for key in source:
        if key not in own:
            report.skipped[key] = "not in the target model"
    target.load_state_dict({**own, **updated})
    return report
