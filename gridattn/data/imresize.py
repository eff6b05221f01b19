"""MATLAB's ``imresize(image, scale, 'bicubic')``, bit-exact, for numpy images and batched torch tensors.

The super-resolution literature makes its low-resolution inputs with MATLAB, so results are comparable only
with the same resize. MATLAB's algorithm, reproduced here:

* cubic kernel with ``a = -0.5``; when shrinking (scale < 1) it is stretched by ``1 / scale`` and scaled by
  ``scale`` (antialiasing), so more input pixels contribute;
* output pixel ``x`` (1-based) maps to input position ``u = x / scale + 0.5 * (1 - 1 / scale)``; the taps
  ``floor(u - width / 2) + 0 .. ceil(width) + 1`` get weights ``kernel(u - tap)``, normalised to sum to 1;
* taps outside the image are mirrored symmetrically (the edge pixel repeated);
* one 1-D pass per dimension, the dimension with the smaller scale first (height first when equal);
* for ``uint8`` input each pass is rounded (half away from zero) and clipped to ``uint8``.

PIL's bicubic differs: it uses ``a = -0.5`` too but other support and rounding rules, and on Set5 it leaves
about 15-20 % of the pixels of MATLAB's result different (up to ~20 levels; see the docs).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def _cubic(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def _contributions(in_length: int, out_length: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(out, taps)`` float64 and 0-based input indices ``(out, taps)`` of one 1-D pass."""
    width = 4.0 / scale if scale < 1 else 4.0
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = left[:, None] + torch.arange(math.ceil(width) + 2, dtype=torch.float64)[None, :]
    distance = u[:, None] - taps
    weights = scale * _cubic(scale * distance) if scale < 1 else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    used = (weights != 0).any(dim=0)  # MATLAB drops taps that no output pixel uses
    weights, taps = weights[:, used], taps[:, used].long() - 1
    period = 2 * in_length  # symmetric mirror: 0 1 .. L-1 L-1 .. 1 0 0 1 ..
    taps = taps % period
    taps = torch.where(taps < in_length, taps, period - 1 - taps)
    return weights, taps


def _resize_dim(x: torch.Tensor, dim: int, out_length: int, scale: float, round_uint8: bool) -> torch.Tensor:
    weights, taps = _contributions(x.shape[dim], out_length, scale)
    weights = weights.to(device=x.device, dtype=x.dtype)
    taps = taps.to(x.device)
    shape = [1] * x.dim()
    shape[dim] = out_length
    out = None
    for k in range(taps.shape[1]):  # accumulate tap by tap, in order, as MATLAB's loop does
        term = x.index_select(dim, taps[:, k]) * weights[:, k].view(shape)
        out = term if out is None else out + term
    if round_uint8:
        out = torch.floor(out + 0.5).clamp(0, 255)
    return out


def _plan(height: int, width: int, scale, size) -> list[tuple[int, int, float]]:
    """The passes: (axis 0 = height / 1 = width, output length, scale), smaller scale first."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if scale is not None:
        scales = (float(scale), float(scale)) if np.isscalar(scale) else tuple(float(s) for s in scale)
        if len(scales) != 2 or min(scales) <= 0:
            raise ValueError(f"scale must be positive (a number or a pair), got {scale!r}")
        lengths = (math.ceil(height * scales[0]), math.ceil(width * scales[1]))
    else:
        lengths = tuple(int(s) for s in size)
        if len(lengths) != 2 or min(lengths) < 1:
            raise ValueError(f"size must be a pair of positive ints (height, width), got {size!r}")
        scales = (lengths[0] / height, lengths[1] / width)
    order = sorted(range(2), key=lambda axis: scales[axis])  # stable: height first on ties
    return [(axis, lengths[axis], scales[axis]) for axis in order]


def imresize(image, scale: float | tuple[float, float] | None = None, size: tuple[int, int] | None = None):
    """Resize like MATLAB ``imresize(image, scale, 'bicubic')`` (or ``imresize(image, size, 'bicubic')``).

    Args:
        image: a numpy array ``(H, W)`` or ``(H, W, C)``, ``uint8`` (rounded after each pass, as MATLAB) or
            float; or a float torch tensor ``(B, C, H, W)`` (any device, differentiable, batched).
        scale: a factor (``1/4`` to make x4 LR images) or ``(scale_h, scale_w)``; output size
            ``ceil(H * scale)``.
        size: the output ``(height, width)`` instead of a scale.

    Returns:
        The resized image, of the input's kind and dtype: ``(ceil(H * scale), ceil(W * scale), ...)``.

    Raises:
        ValueError: both or neither of ``scale`` and ``size``; a non-positive scale or size; a numpy image
            that is not ``(H, W)`` / ``(H, W, C)`` or not uint8 / float; a tensor that is not float
            ``(B, C, H, W)``.

    Examples:
        >>> import numpy as np, torch
        >>> from gridattn.data import imresize
        >>> hr = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
        >>> lr = imresize(hr, 1 / 4)                       # the x4 LR image of the benchmarks
        >>> lr.shape, lr.dtype
        ((16, 12, 3), dtype('uint8'))
        >>> imresize(torch.rand(2, 3, 16, 12), scale=4).shape       # batched, differentiable
        torch.Size([2, 3, 64, 48])
    """
    if isinstance(image, torch.Tensor):
        if image.dim() != 4 or not image.is_floating_point():
            raise ValueError(f"a tensor image must be float (B, C, H, W), got {image.dtype} {tuple(image.shape)}")
        out = image
        for axis, length, factor in _plan(image.shape[-2], image.shape[-1], scale, size):
            out = _resize_dim(out, axis + 2, length, factor, round_uint8=False)
        return out
    array = np.asarray(image)
    if array.ndim not in (2, 3) or array.size == 0:
        raise ValueError(f"a numpy image must be (H, W) or (H, W, C), got shape {array.shape}")
    is_uint8 = array.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"a numpy image must be uint8 or float, got {array.dtype}")
    out = torch.from_numpy(array.astype(np.float64))
    for axis, length, factor in _plan(array.shape[0], array.shape[1], scale, size):
        out = _resize_dim(out, axis, length, factor, round_uint8=is_uint8)
    return out.numpy().astype(array.dtype)
