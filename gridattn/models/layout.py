"""Official state-dict layouts, each described once: the same description converts a model's weights to the
official layout, reads an official file strictly, and tells the architecture's files apart from others.

gridattn's module trees differ from the official ones in names (``embed_norm`` vs ``patch_embed.norm``), in
layout (some 1x1 convolutions are ``Linear`` layers here) and in projections the official code keeps as one
tensor and gridattn as several (HMANet's GAB query/key/value rows). A :class:`Layout` lists those
differences; :func:`to_layout` and :func:`from_layout` apply them losslessly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._errors import CheckpointError
from ..blocks.reconstruction import upsampler_scales


@dataclass(frozen=True)
class MergedRows:
    """Several gridattn tensors stored as the row blocks of one official tensor.

    Attributes:
        pattern: regex on a gridattn key whose group 1 names the part (``r"\\.gab\\.(a|b)\\.qkv\\."``).
        parts: the part names in row order.
    """

    pattern: str
    parts: tuple[str, ...]

    def part(self, key: str) -> int | None:
        match = re.search(self.pattern, key)
        return None if match is None else self.parts.index(match.group(1))


@dataclass(frozen=True)
class Layout:
    """How one official code names and shapes an architecture's tensors.

    Attributes:
        name: the layout's name (``"official"``, ``"neosr"``).
        renames: ``(pattern, replacement)`` regex substitutions, applied in order, that turn a gridattn key into
            the official key.
        conv_1x1: regex of gridattn keys of ``Linear`` weights that the official code stores as 1x1 convolution
            weights ``(out, in, 1, 1)``.
        merged: tensors the official code concatenates by rows.
        buffers: official-only entries computed from the configuration (index buffers, fixed masks): written by
            :func:`to_layout`, required to be equal when read.
        signature: regexes that some key of every file in this layout matches (detection).
        excludes: regexes that no key of a file in this layout matches (tells apart architectures that share
            names, such as SwinIR and HAT).
        config_changes: fields that this layout fixes in a configuration inferred from shapes (neosr's RGB mean).
        source: where the layout comes from (for messages).
    """

    name: str
    renames: tuple[tuple[str, str], ...]
    conv_1x1: str | None = None
    merged: tuple[MergedRows, ...] = ()
    buffers: Callable[[Any], dict[str, torch.Tensor]] | None = None
    signature: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    config_changes: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def key(self, ours: str) -> str:
        """The official key of a gridattn key."""
        for pattern, replacement in self.renames:
            ours = re.sub(pattern, replacement, ours)
        return ours

    def matches(self, keys: set[str] | Mapping[str, Any]) -> bool:
        """Whether every signature pattern matches some key and no key matches an excluded pattern."""
        return (all(any(re.search(pattern, key) for key in keys) for pattern in self.signature)
                and not any(re.search(pattern, key) for pattern in self.excludes for key in keys))

    def _merged(self, key: str) -> tuple[MergedRows, int] | None:
        for merged in self.merged:
            part = merged.part(key)
            if part is not None:
                return merged, part
        return None

    def _is_conv_1x1(self, key: str) -> bool:
        return self.conv_1x1 is not None and re.search(self.conv_1x1, key) is not None


def to_layout(model: nn.Module, layout: Layout) -> dict[str, torch.Tensor]:
    """``model``'s weights in ``layout`` (loadable by the official code with ``strict=True``)."""
    official: dict[str, torch.Tensor] = {}
    parts: dict[str, list] = {}
    for key, value in model.state_dict().items():
        target = layout.key(key)
        if layout._is_conv_1x1(key):
            value = value[:, :, None, None]
        merged = layout._merged(key)
        if merged is not None:
            parts.setdefault(target, [None] * len(merged[0].parts))[merged[1]] = value
            continue
        official[target] = value
    for target, values in parts.items():
        official[target] = torch.cat(values, dim=0)
    if layout.buffers is not None:
        official.update(layout.buffers(model.config))
    return official


def from_layout(model: nn.Module, state: Mapping[str, torch.Tensor], layout: Layout) -> dict[str, torch.Tensor]:
    """Convert a state dict in ``layout`` to ``model``'s own layout, strictly.

    Every key of ``state`` must be used and every model tensor filled with the right shape; otherwise a
    :class:`~gridattn.models.CheckpointError` lists all the problems at once. The layout's buffers (index
    tables, fixed masks) hold no weights: a file may lack them (some trainers strip them), and where it has them
    they must equal what the configuration gives.
    """
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, misshaped = [], []
    row_ends: dict[str, int] = {}
    for key, expected in ours.items():
        source = layout.key(key)
        if source not in state:
            missing.append(source)
            continue
        value = state[source]
        merged = layout._merged(key)
        if merged is not None:  # rows of a shared tensor, in part order
            rows, part = merged
            start = sum(ours[key.replace(f".{rows.parts[part]}.", f".{p}.")].shape[0] for p in rows.parts[:part])
            value = value[start:start + expected.shape[0]]
            row_ends[source] = max(row_ends.get(source, 0), start + expected.shape[0])
        elif layout._is_conv_1x1(key) and value.dim() == 4 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]
        if tuple(value.shape) != tuple(expected.shape):
            misshaped.append(f"{source}: checkpoint {tuple(state[source].shape)}, "
                             f"model expects {tuple(expected.shape)}")
            continue
        converted[key] = value
        used.add(source)
    for source, rows in row_ends.items():
        if state[source].shape[0] != rows:
            misshaped.append(f"{source}: checkpoint has {state[source].shape[0]} rows, the model uses {rows}")
    for key, value in (layout.buffers(model.config) if layout.buffers is not None else {}).items():
        if key in state:
            used.add(key)
            stored = state[key]
            if stored.shape != value.shape:
                misshaped.append(f"{key}: not what the configuration gives ({tuple(stored.shape)} stored, "
                                 f"{tuple(value.shape)} expected)")
            elif not torch.equal(stored.cpu().to(value.dtype), value):
                misshaped.append(f"{key}: its values differ from those the configuration gives")
    unexpected = sorted(set(state) - used - {s.split(":")[0] for s in misshaped})
    if missing or unexpected or misshaped:
        raise problems(f"checkpoint does not match the {type(model).__name__} configuration "
                       f"({describe(model.config)}) in the {layout.name} layout:",
                       {"missing": missing, "unexpected": unexpected, "mis-shaped": misshaped})
    return converted


def required(state: Mapping[str, torch.Tensor], key: str, title: str) -> torch.Tensor:
    """``state[key]``, or a :class:`~gridattn.models.CheckpointError` saying the file is not a ``title`` checkpoint."""
    if key not in state:
        raise CheckpointError(f"not {title} checkpoint: key {key!r} is missing")
    return state[key]


def pixel_shuffle_scale(state: Mapping[str, torch.Tensor], features: int, scales: tuple[int, ...]) -> int:
    """The scale of an official pixel-shuffle upsampler (``upsample.N.weight``: one convolution to ``4 * features``
    per factor 2, or one to ``9 * features`` for 3).

    Raises:
        CheckpointError: convolutions of other widths, or a scale not in ``scales``.
    """
    keys = sorted((k for k in state if re.match(r"upsample\.\d+\.weight$", k)), key=lambda k: int(k.split(".")[1]))
    ups = [state[k].shape[0] // features for k in keys]
    scale = 3 if ups == [9] else 2 ** len(ups) if ups and set(ups) == {4} else None
    if scale not in scales:
        raise CheckpointError(f"unsupported upsampler: convolutions with {ups} x {features} outputs")
    return scale


def read_upsampler(state: Mapping[str, torch.Tensor], in_channels: int) -> dict[str, Any]:
    """The reconstruction of an official SwinIR-style state dict (``upsampler``, ``scale`` and, where it has them,
    ``upsample_features``), read off its keys and shapes; no upsampling keys: ``"none"`` at scale 1."""
    if "conv_up1.weight" in state:
        return dict(upsampler="nearest+conv", scale=4 if "conv_up2.weight" in state else 2,
                    upsample_features=int(state["conv_up1.weight"].shape[0]))
    convs = sorted((k for k in state if re.match(r"upsample\.\d+\.weight$", k)), key=lambda k: int(k.split(".")[1]))
    if "conv_before_upsample.0.weight" in state:
        feats = int(state["conv_before_upsample.0.weight"].shape[0])
        scale = pixel_shuffle_scale(state, feats, upsampler_scales("pixelshuffle"))
        return dict(upsampler="pixelshuffle", scale=scale, upsample_features=feats)
    if convs:
        scale = math.isqrt(state[convs[0]].shape[0] // in_channels)
        return dict(upsampler="pixelshuffledirect", scale=scale)
    return dict(upsampler="none", scale=1)


def describe(config: Any) -> str:
    """A short description of a configuration for messages: scale and width."""
    return f"scale {config.scale}, embed_dim {config.embed_dim}"


def problems(title: str, groups: dict[str, list[str]]) -> CheckpointError:
    """One error listing missing / unexpected / mis-shaped keys, at most 12 of each."""
    lines = [title]
    for name, items in groups.items():
        if items:
            lines.append(f"  {name} ({len(items)}): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else ""))
    return CheckpointError("\n".join(lines))
