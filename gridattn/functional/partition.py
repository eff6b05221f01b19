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

    Args:
        x: channels-last feature map ``(B, H, W, C)``; ``H`` and ``W`` multiples of the window.
        window_size: ``window`` or ``(window_h, window_w)``.

    Returns:
        ``(B * num_windows, window_h, window_w, C)`` with ``num_windows = (H / window_h) * (W / window_w)``;
        windows are ordered batch-major, then row-major over the window grid (the order Swin uses).

    Raises:
        ValueError: ``x`` is not a non-empty floating 4-D map, a window size below 1, or ``H``/``W`` not a
            multiple of the window (pad first with :func:`~gridattn.functional.pad_to_multiple`).

    Examples:
        >>> import torch
        >>> from gridattn.functional import window_partition, window_reverse
        >>> x = torch.randn(2, 16, 24, 8)
        >>> windows = window_partition(x, 8)
        >>> windows.shape                                  # 2 images x (2 x 3) windows
        torch.Size([12, 8, 8, 8])
        >>> torch.equal(window_reverse(windows, 8, 16, 24), x)
        True
    """
    check_feature_map(x)
    wh, ww = to_pair(window_size, "window_size")
    _check_divisible(x.shape[1], x.shape[2], (wh, ww), "window size")
    return rearrange(x, "b (nh wh) (nw ww) c -> (b nh nw) wh ww c", wh=wh, ww=ww)


def window_reverse(windows: torch.Tensor, window_size: int | tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * num_windows, wh, ww, C)`` back to ``(B, H, W, C)``.

    Args:
        windows: ``(B * num_windows, window_h, window_w, C)`` in the order :func:`window_partition` makes.
        window_size: ``window`` or ``(window_h, window_w)``.
        height: ``H`` of the map (a multiple of ``window_h``).
        width: ``W`` of the map (a multiple of ``window_w``).

    Returns:
        ``(B, H, W, C)``.

    Raises:
        ValueError: ``height`` / ``width`` not multiples of the window, or a window size below 1.
    """
    wh, ww = to_pair(window_size, "window_size")
    _check_divisible(height, width, (wh, ww), "window size")
    return rearrange(windows, "(b nh nw) wh ww c -> b (nh wh) (nw ww) c", nh=height // wh, nw=width // ww)


def grid_partition(x: torch.Tensor, interval: int | tuple[int, int]) -> torch.Tensor:
    """Split ``(B, H, W, C)`` into interval grids (HMANet's grid shuffle).

    Token ``(a * interval_h + i, b * interval_w + j)`` goes to group ``(i, j)`` at position ``(a, b)``: each
    group is a sub-sampled copy of the whole map.

    Args:
        x: channels-last feature map ``(B, H, W, C)``; ``H`` and ``W`` multiples of the interval.
        interval: ``interval`` or ``(interval_h, interval_w)``.

    Returns:
        ``(B * interval_h * interval_w, H // interval_h, W // interval_w, C)``, groups ordered batch-major
        then row-major over ``(i, j)``.

    Raises:
        ValueError: ``x`` is not a non-empty floating 4-D map, an interval below 1, or ``H``/``W`` not a
            multiple of the interval (pad first with :func:`~gridattn.functional.pad_to_multiple`).

    Examples:
        >>> import torch
        >>> from gridattn.functional import grid_partition
        >>> x = torch.arange(16.0).reshape(1, 4, 4, 1)
        >>> groups = grid_partition(x, 2)                  # 4 groups of 2 x 2 tokens
        >>> groups.shape
        torch.Size([4, 2, 2, 1])
        >>> groups[0, ..., 0]                              # group (0, 0): rows 0 and 2, columns 0 and 2
        tensor([[ 0.,  2.],
                [ 8., 10.]])
    """
    check_feature_map(x)
    ih, iw = to_pair(interval, "interval")
    _check_divisible(x.shape[1], x.shape[2], (ih, iw), "interval")
    return rearrange(x, "b (gh ih) (gw iw) c -> (b ih iw) gh gw c", ih=ih, iw=iw)


def grid_reverse(groups: torch.Tensor, interval: int | tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`grid_partition`: back to ``(B, H, W, C)``.

    Args:
        groups: ``(B * interval_h * interval_w, H // interval_h, W // interval_w, C)`` in the order
            :func:`grid_partition` makes.
        interval: ``interval`` or ``(interval_h, interval_w)``.
        height: ``H`` of the map (a multiple of ``interval_h``).
        width: ``W`` of the map (a multiple of ``interval_w``).

    Returns:
        ``(B, H, W, C)``.

    Raises:
        ValueError: ``height`` / ``width`` not multiples of the interval, or an interval below 1.
    """
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

    Equal to ``grid_partition(x, interval=(H // grid_h, W // grid_w))``: the group size is fixed and the
    stride follows the map, where :func:`grid_partition` fixes the stride and lets the group size follow.

    Args:
        x: channels-last feature map ``(B, H, W, C)``; ``H``, ``W`` multiples of the grid size.
        grid_size: ``grid`` or ``(grid_h, grid_w)`` tokens per group.

    Returns:
        ``(B * H/grid_h * W/grid_w, grid_h, grid_w, C)``.

    Raises:
        ValueError: ``x`` is not a non-empty floating 4-D map, or ``H``/``W`` not multiples of the grid size.

    Examples:
        >>> import torch
        >>> from gridattn.functional import fixed_grid_partition, grid_partition
        >>> x = torch.randn(1, 32, 32, 8)
        >>> fixed_grid_partition(x, 8).shape               # 16 groups of 8 x 8 tokens, stride 4
        torch.Size([16, 8, 8, 8])
        >>> torch.equal(fixed_grid_partition(x, 8), grid_partition(x, 4))
        True
    """
    check_feature_map(x)
    return grid_partition(x, _grid_interval(x.shape[1], x.shape[2], grid_size))


def fixed_grid_reverse(groups: torch.Tensor, grid_size: int | tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`fixed_grid_partition`: back to ``(B, H, W, C)``.

    Args:
        groups: ``(B * H/grid_h * W/grid_w, grid_h, grid_w, C)``.
        grid_size: ``grid`` or ``(grid_h, grid_w)``.
        height: ``H`` of the map.
        width: ``W`` of the map.

    Raises:
        ValueError: ``height`` / ``width`` not multiples of the grid size.
    """
    return grid_reverse(groups, _grid_interval(height, width, grid_size), height, width)
