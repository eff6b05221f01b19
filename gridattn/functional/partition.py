"""Window and grid partitions of channels-last feature maps, and their inverses.

Two ways of grouping the tokens of a ``(B, H, W, C)`` map for attention:

* **windows** (Swin's W-MSA): contiguous ``window_h x window_w`` tiles;
* **grids**: tokens sampled every ``interval`` pixels over the whole map. HMANet's *interval grid* with
  interval ``K`` puts token ``(a*K + i, b*K + j)`` into group ``(i, j)`` at position ``(a, b)``, so each
  group holds ``(H/K) * (W/K)`` tokens spread over the map. MaxViT's *fixed grid* of ``G x G`` tokens with
  stride ``H/G`` is the same operation with ``interval = (H/G, W/G)``; :func:`fixed_grid_partition` is a
  thin wrapper that computes that interval.

Sizes must already be multiples of the window or interval (pad first with
:func:`gridattn.functional.pad_to_multiple`); a size that is not raises ``ValueError``.
"""

from __future__ import annotations

import torch
from einops import rearrange

from ._checks import check_feature_map, to_pair


def _check_divisible(height: int, width: int, unit: tuple[int, int], what: str) -> None:
    if height % unit[0] or width % unit[1]:
        raise ValueError(
            f"feature map size {height}x{width} is not a multiple of the {what} {unit[0]}x{unit[1]}; "
            "pad it first (gridattn.functional.pad_to_multiple)"
        )


def window_partition(x: torch.Tensor, window_size: int | tuple[int, int]) -> torch.Tensor:
    """Split ``(B, H, W, C)`` into non-overlapping windows.

    Returns ``(B * num_windows, window_h, window_w, C)``; windows are ordered batch-major, then row-major
    over the window grid (the order Swin uses).
    """
    check_feature_map(x)
    wh, ww = to_pair(window_size, "window_size")
    _check_divisible(x.shape[1], x.shape[2], (wh, ww), "window size")
    return rearrange(x, "b (nh wh) (nw ww) c -> (b nh nw) wh ww c", wh=wh, ww=ww)


def window_reverse(windows: torch.Tensor, window_size: int | tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * num_windows, wh, ww, C)`` back to ``(B, H, W, C)``."""
    wh, ww = to_pair(window_size, "window_size")
    _check_divisible(height, width, (wh, ww), "window size")
    return rearrange(windows, "(b nh nw) wh ww c -> b (nh wh) (nw ww) c", nh=height // wh, nw=width // ww)


def grid_partition(x: torch.Tensor, interval: int | tuple[int, int]) -> torch.Tensor:
    """Split ``(B, H, W, C)`` into interval grids (HMANet's grid shuffle).

    Token ``(a * interval_h + i, b * interval_w + j)`` goes to group ``(i, j)`` at position ``(a, b)``.
    Returns ``(B * interval_h * interval_w, H // interval_h, W // interval_w, C)``, groups ordered
    batch-major then row-major over ``(i, j)``.
    """
    check_feature_map(x)
    ih, iw = to_pair(interval, "interval")
    _check_divisible(x.shape[1], x.shape[2], (ih, iw), "interval")
    return rearrange(x, "b (gh ih) (gw iw) c -> (b ih iw) gh gw c", ih=ih, iw=iw)


def grid_reverse(groups: torch.Tensor, interval: int | tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`grid_partition`: back to ``(B, H, W, C)``."""
    ih, iw = to_pair(interval, "interval")
    _check_divisible(height, width, (ih, iw), "interval")
    return rearrange(groups, "(b ih iw) gh gw c -> b (gh ih) (gw iw) c", ih=ih, iw=iw)


def _grid_interval(height: int, width: int, grid_size: int | tuple[int, int]) -> tuple[int, int]:
    gh, gw = to_pair(grid_size, "grid_size")
    if height % gh or width % gw:
        raise ValueError(f"feature map size {height}x{width} is not a multiple of the grid size {gh}x{gw}")
    return height // gh, width // gw


def fixed_grid_partition(x: torch.Tensor, grid_size: int | tuple[int, int]) -> torch.Tensor:
    """MaxViT's grid partition: ``grid_h x grid_w`` tokens per group with stride ``(H / grid_h, W / grid_w)``.

    Equal to ``grid_partition(x, interval=(H // grid_h, W // grid_w))``.
    Returns ``(B * H/grid_h * W/grid_w, grid_h, grid_w, C)``.
    """
    check_feature_map(x)
    return grid_partition(x, _grid_interval(x.shape[1], x.shape[2], grid_size))


def fixed_grid_reverse(groups: torch.Tensor, grid_size: int | tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`fixed_grid_partition`."""
    return grid_reverse(groups, _grid_interval(height, width, grid_size), height, width)
