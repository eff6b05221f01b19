"""Argument checks shared by the functional ops and the layers.

Every public entry point validates its input here so that a user sees one clear ``ValueError`` naming the
problem instead of a shape error from deep inside a reshape.
"""

from __future__ import annotations

import torch

Size2 = tuple[int, int]


def _int_pair(value, name: str) -> Size2:
    if hasattr(value, "__index__") and not isinstance(value, bool):  # int, numpy integer, SymInt
        value = value if isinstance(value, torch.SymInt) else int(value.__index__())
        return value, value
    try:
        pair = tuple(v if isinstance(v, torch.SymInt) else v.__index__() for v in value)
    except (TypeError, AttributeError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(pair) != 2 or any(isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def to_pair(value: int | tuple[int, int], name: str) -> Size2:
    """Return ``(value, value)`` for an int, or the validated pair; every entry must be an int >= 1."""
    pair = _int_pair(value, name)
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return pair


def check_shift(shift: int | tuple[int, int], window: Size2) -> Size2:
    """Validate a cyclic shift against its window: ints with ``0 <= shift < window`` per axis."""
    pair = _int_pair(shift, "shift")
    if not all(0 <= s < w for s, w in zip(pair, window)):
        raise ValueError(f"shift {shift!r} must lie in [0, window_size) for window_size {window}")
    return pair


def check_probability(value: float, name: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")


def check_positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def head_width(dim: int, num_heads: int, head_dim: int | None) -> int:
    """Per-head width: ``head_dim`` when given (any positive int), else ``dim / num_heads`` (must divide)."""
    if head_dim is None:
        return check_heads(dim, num_heads)
    check_positive(dim, "dim")
    check_positive(num_heads, "num_heads")
    check_positive(head_dim, "head_dim")
    return head_dim


def check_heads(dim: int, num_heads: int, name: str = "dim") -> int:
    """Validate ``dim`` / ``num_heads`` and return the per-head width."""
    check_positive(dim, name)
    check_positive(num_heads, "num_heads")
    if dim % num_heads:
        raise ValueError(f"{name}={dim} is not divisible by num_heads={num_heads}")
    return dim // num_heads


def check_feature_map(
    x: torch.Tensor, channels: int | None = None, name: str = "input", weight: torch.Tensor | None = None
) -> None:
    """Check that ``x`` is a non-empty floating ``(B, H, W, C)`` feature map with ``channels`` channels, on the
    device of the layer's ``weight`` and (outside autocast) of its dtype."""
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
    if weight is not None:
        check_like(x, weight, name)


def check_like(x: torch.Tensor, weight: torch.Tensor, name: str) -> None:
    """``x`` must be on ``weight``'s device and, outside autocast, of its dtype."""
    if x.device != weight.device:
        raise ValueError(f"{name} is on {x.device} but the layer's weights are on {weight.device}; move one of them")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(f"{name} has dtype {x.dtype} but the layer's weights are {weight.dtype}; convert one of them")


def check_last_dim(x: torch.Tensor, channels: int, name: str, weight: torch.Tensor | None = None) -> None:
    """Check that ``x`` is a floating tensor ``(..., channels)`` of any rank >= 1, on the device of the layer's
    ``weight`` and (outside autocast) of its dtype: the input contract of the MLP and the residual wrappers."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} takes a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != channels:
        raise ValueError(f"{name} expects {channels} channels in the last dim, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} needs a floating dtype, got {x.dtype}")
    if weight is not None:
        check_like(x, weight, name)
