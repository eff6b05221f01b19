"""Relative positions inside a window or group: the index into a bias table and the raw offsets."""

from __future__ import annotations

import torch

from ._cache import cached_tensor
from ._checks import to_pair


def relative_position_rows(
    size: int | tuple[int, int], start: int, stop: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Rows ``start:stop`` of :func:`relative_position_index` (queries ``start..stop-1`` against every key).

    Computed, not cached: ``(stop - start, h*w)`` int64. Lets a large group's bias be built a block of
    queries at a time instead of as one ``(N, N)`` index.
    """
    h, w = to_pair(size, "size")
    queries = torch.arange(start, stop, device=device)
    keys = torch.arange(h * w, device=device)
    query_rows, key_rows = torch.div(queries, w, rounding_mode="floor"), torch.div(keys, w, rounding_mode="floor")
    dy = query_rows[:, None] - key_rows[None, :]
    # i - row * w, not i % w: the ONNX exporter cannot translate a remainder by a symbolic (dynamic) size
    dx = (queries - query_rows * w)[:, None] - (keys - key_rows * w)[None, :]
    return (dy + h - 1) * (2 * w - 1) + (dx + w - 1)


@cached_tensor()
def _relative_position_index(size: tuple[int, int], device: torch.device) -> torch.Tensor:
    return relative_position_rows(size, 0, size[0] * size[1], device)


def relative_position_index(size: int | tuple[int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """Swin's relative-position index of an ``h x w`` window.

    Entry ``[n, m]`` (tokens in raster order) is ``(dy + h - 1) * (2w - 1) + (dx + w - 1)`` where
    ``(dy, dx)`` is the position of token ``n`` minus that of token ``m``; it indexes the rows of
    :func:`relative_offsets` and of a ``((2h-1)(2w-1), heads)`` bias table.

    Returns a cached ``(h*w, h*w)`` int64 tensor on ``device``: treat it as read-only.
    """
    return _relative_position_index(to_pair(size, "size"), torch.device(device if device is not None else "cpu"))


def relative_offsets(size: int | tuple[int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """All relative offsets ``(dy, dx)`` of an ``h x w`` window as float32 ``((2h-1)(2w-1), 2)``.

    Raw integers in ``[1-h, h-1] x [1-w, w-1]``, row ``r`` being the offset that
    :func:`relative_position_index` maps to ``r`` (the input of HMANet's dynamic position bias).
    """
    h, w = to_pair(size, "size")
    dy = torch.arange(1 - h, h, device=device, dtype=torch.float32)
    dx = torch.arange(1 - w, w, device=device, dtype=torch.float32)
    return torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)
