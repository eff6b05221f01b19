"""Padding of the two spatial dimensions to a multiple of a window or interval, and its inverse.

Padding is added at the bottom and the right only (as the official HMANet test code does), so cropping
``[:H, :W]`` undoes it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ._checks import to_pair

PadMode = Literal["zero", "symmetric", "reflect", "replicate"]
"""The ``mode`` argument of :func:`pad_to_multiple` as a type."""
PAD_MODES: tuple[str, ...] = ("zero", "symmetric", "reflect", "replicate")
"""The padding modes :func:`pad_to_multiple` accepts."""


def padded_size(height: int, width: int, multiple: int | tuple[int, int]) -> tuple[int, int]:
    """The smallest ``(H', W') >= (H, W)`` that are multiples of ``multiple``.

    Args:
        height: ``H``.
        width: ``W``.
        multiple: an int or ``(multiple_h, multiple_w)``, at least 1.

    Raises:
        ValueError: a multiple below 1.

    Examples:
        >>> from gridattn.functional import padded_size
        >>> padded_size(37, 50, 16)
        (48, 64)
    """
    mh, mw = to_pair(multiple, "multiple")
    # (h + m - 1) // m, not -(-h // m): the ONNX exporter turns a floor division of symbolic sizes into a
    # truncating one, wrong for negative operands
    return (height + mh - 1) // mh * mh, (width + mw - 1) // mw * mw


def _remainder(i: torch.Tensor, n: int) -> torch.Tensor:
    """``i % n`` for ``i >= 0``, written so that the ONNX exporter also translates it for a symbolic ``n``."""
    return i - torch.div(i, n, rounding_mode="floor") * n


def _known_equal(new: int, old: int) -> bool:
    """``new == old`` for ints; for symbolic sizes (torch.export with dynamic shapes) only when provable, so
    that tracing does not specialise on one size: a size not known to need no padding is padded (by nothing
    at run time when it needs none)."""
    if not isinstance(new, torch.SymInt) and not isinstance(old, torch.SymInt):
        return bool(new == old)
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return statically_known_true(new == old)


def _source_index(length: int, padded: int, mode: str, device: torch.device) -> torch.Tensor:
    """For every output position ``0..padded-1``, the input position it copies (any amount of padding)."""
    i = torch.arange(padded, device=device)
    if mode == "replicate":
        return i.clamp(max=length - 1)
    if mode == "symmetric":  # edge repeated: ... c b a | a b c | c b a ...
        i = _remainder(i, 2 * length)
        return torch.where(i < length, i, 2 * length - 1 - i)
    if length == 1:  # reflect of a single sample has nothing to mirror but itself
        return torch.zeros_like(i)
    i = _remainder(i, 2 * length - 2)  # edge not repeated: ... b | a b c | b a ...
    return torch.where(i < length, i, 2 * length - 2 - i)


def pad_to_multiple(
    x: torch.Tensor,
    multiple: int | tuple[int, int],
    *,
    mode: PadMode = "zero",
    dims: tuple[int, int] = (1, 2),
) -> torch.Tensor:
    """Pad the spatial ``dims`` of ``x`` at the end so that their sizes are multiples of ``multiple``.

    Args:
        x: any tensor; ``dims`` name its height and width dimensions. The default ``(1, 2)`` is for
            channels-last feature maps ``(B, H, W, C)``; use ``dims=(-2, -1)`` for images ``(B, C, H, W)``.
        multiple: an int or ``(multiple_h, multiple_w)``.
        mode: ``"zero"``; ``"symmetric"`` (mirror that repeats the edge sample, ``c b a | a b c | c b a``: the
            official HMANet test-time padding); ``"reflect"`` (mirror without repeating the edge); or
            ``"replicate"``. The mirror modes work for any amount of padding, also more than the input size.
        dims: the height and width dimensions of ``x``.

    Returns:
        The padded tensor (``x`` itself when no padding is needed). Padding is added after the last row and
        column only, so ``unpad(y, H, W, dims=dims)`` recovers ``x``.

    Raises:
        ValueError: an unknown ``mode``, ``dims`` that do not name two different dimensions, an empty spatial
            size, or a multiple below 1.

    Examples:
        >>> import torch
        >>> from gridattn.functional import pad_to_multiple, unpad
        >>> x = torch.randn(1, 37, 50, 8)                               # (B, H, W, C)
        >>> pad_to_multiple(x, 16).shape
        torch.Size([1, 48, 64, 8])
        >>> image = torch.arange(3.0).reshape(1, 1, 1, 3)               # (B, C, H, W)
        >>> pad_to_multiple(image, (1, 8), mode="symmetric", dims=(-2, -1))[0, 0, 0]
        tensor([0., 1., 2., 2., 1., 0., 0., 1.])
        >>> torch.equal(unpad(pad_to_multiple(x, 16), 37, 50), x)
        True
    """
    if mode not in PAD_MODES:
        raise ValueError(f"unknown padding mode {mode!r}; expected one of {PAD_MODES}")
    dim_h, dim_w = (d % x.dim() for d in dims) if x.dim() >= 2 else (None, None)
    if dim_h is None or dim_h == dim_w:
        raise ValueError(f"dims={dims} must name two different dimensions of a tensor with shape {tuple(x.shape)}")
    height, width = x.shape[dim_h], x.shape[dim_w]
    if height == 0 or width == 0:
        raise ValueError(f"cannot pad an empty spatial size {height}x{width}")
    new_h, new_w = padded_size(height, width, multiple)
    for dim, old, new in ((dim_h, height, new_h), (dim_w, width, new_w)):
        if _known_equal(new, old):
            continue
        if mode == "zero":
            pad = [0, 0] * (x.dim() - 1 - dim) + [0, new - old]
            x = F.pad(x, pad)
        else:
            x = x.index_select(dim, _source_index(old, new, mode, x.device))
    return x


def _crop_symbolic(x: torch.Tensor, dims: tuple[int, int], sizes: tuple[int, int]) -> torch.Tensor:
    """:func:`unpad` of symbolic sizes (torch.export with dynamic shapes, for ONNX): ``narrow`` would add the
    guard ``size <= padded size``, which the symbolic solver cannot prove for a padded size (a floor division),
    so a crop that is not provably a no-op is an ``index_select`` (bounds checked at run time)."""
    for dim, size in zip(dims, sizes):
        if not _known_equal(x.shape[dim], size):
            x = x.index_select(dim, torch.arange(size, device=x.device))
    return x


def unpad(x: torch.Tensor, height: int, width: int, *, dims: tuple[int, int] = (1, 2)) -> torch.Tensor:
    """Crop the spatial ``dims`` back to ``height x width`` (inverse of :func:`pad_to_multiple`).

    Args:
        x: the padded tensor.
        height: the height to keep (rows ``0 .. height - 1``).
        width: the width to keep.
        dims: the height and width dimensions of ``x``; ``(1, 2)`` for ``(B, H, W, C)``.

    Returns:
        A view of ``x``.

    Raises:
        ValueError: ``x`` is smaller than ``height x width``.
    """
    dim_h, dim_w = (d % x.dim() for d in dims)
    if any(isinstance(v, torch.SymInt) for v in (x.shape[dim_h], x.shape[dim_w], height, width)):
        return _crop_symbolic(x, (dim_h, dim_w), (height, width))
    if x.shape[dim_h] < height or x.shape[dim_w] < width:
        raise ValueError(f"cannot crop {x.shape[dim_h]}x{x.shape[dim_w]} to the larger size {height}x{width}")
    return x.narrow(dim_h, 0, height).narrow(dim_w, 0, width)
