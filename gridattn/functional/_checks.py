"""Argument checks shared by the functional ops and the layers.

Every public entry point validates its input here so that a user sees one clear ``ValueError`` naming the
problem instead of a shape error from deep inside a reshape.
"""

from __future__ import annotations

import torch

Size2 = tuple[int, int]


def to_pair(value: int | tuple[int, int], name: str) -> Size2:
    """Return ``(value, value)`` for an int, or the validated pair; every entry must be an int >= 1."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return pair  # type: ignore[return-value]


def check_positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_heads(dim: int, num_heads: int, name: str = "dim") -> int:
    """Validate ``dim`` / ``num_heads`` and return the per-head width."""
    check_positive(dim, name)
    check_positive(num_heads, "num_heads")
    if dim % num_heads:
        raise ValueError(f"{name}={dim} is not divisible by num_heads={num_heads}")
    return dim // num_heads


def check_feature_map(x: torch.Tensor, channels: int | None = None, name: str = "input") -> None:
    """Check that ``x`` is a non-empty floating ``(B, H, W, C)`` feature map with ``channels`` channels."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D channels-last feature map (B, H, W, C), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"{name} has {x.shape[-1]} channels in its last dim, expected {channels} (layout is (B, H, W, C))"
        )
