"""Additive attention masks for shifted windows and for padded maps.

Both masks come from one rule: every token gets a *label*, and a query may attend to a key only when they
carry the same label. For windows the label of a real token is the window it belongs to on the unrolled map
(so SW-MSA's cyclic roll never lets tokens from opposite borders meet); padding tokens share one label of
their own, so real tokens never see padding and no row is ever fully masked (no NaN, also in backward).
The masks are exact by default (``-inf``, i.e. weight 0). Swin and the official HMANet code add ``-100``
instead, which only masks while scores stay well below 100; ``masked_value=-100.0`` reproduces it.
"""

from __future__ import annotations

import torch

from ._cache import cached_tensor
from ._checks import check_shift, to_pair
from .padding import padded_size
from .partition import grid_partition, window_partition

PAD_LABEL = -1
"""The label every padding token carries in :func:`grid_padding_labels` (real tokens carry other values)."""


def _axis_labels(length: int, padded: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Per position: index of its (shifted) window on the unrolled axis, or ``PAD_LABEL`` for padding."""
    pos = torch.arange(padded, device=device)
    return torch.where(pos < length, torch.div(pos - shift, window, rounding_mode="floor") + 1, PAD_LABEL)


def label_mask(
    query_labels: torch.Tensor,
    key_labels: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    masked_value: float = float("-inf"),
) -> torch.Tensor:
    """Additive mask from labels: ``(G, Nq)`` and ``(G, Nk)`` -> ``(G, Nq, Nk)``, 0 where the query's and
    the key's labels match, ``masked_value`` elsewhere.

    Args:
        query_labels: ``(G, Nq)`` integer labels of the queries of ``G`` groups (windows or grids).
        key_labels: ``(G, Nk)`` labels of the keys.
        dtype: dtype of the mask.
        masked_value: the value where labels differ; ``-inf`` masks exactly.

    Returns:
        ``(G, Nq, Nk)`` on the labels' device, to add to the attention scores.

    Examples:
        >>> import torch
        >>> from gridattn.functional import label_mask
        >>> labels = torch.tensor([[0, 0, -1]])            # two real tokens, one padding token
        >>> label_mask(labels, labels)
        tensor([[[0., 0., -inf],
                 [0., 0., -inf],
                 [-inf, -inf, 0.]]])
    """
    same = query_labels[:, :, None] == key_labels[:, None, :]
    zero = torch.zeros((), dtype=dtype, device=query_labels.device)
    return torch.where(same, zero, torch.tensor(masked_value, dtype=dtype, device=query_labels.device))


def _map_labels(height: int, width: int, padded: tuple[int, int], window: tuple[int, int], shift: tuple[int, int],
                device):
    rows = _axis_labels(height, padded[0], window[0], shift[0], device)
    cols = _axis_labels(width, padded[1], window[1], shift[1], device)
    num_cols = padded[1] // window[1] + 2  # col labels lie in [0, num_cols)
    labels = rows[:, None] * num_cols + cols[None, :]
    labels = torch.where((rows[:, None] == PAD_LABEL) | (cols[None, :] == PAD_LABEL), PAD_LABEL, labels)
    return labels[None, :, :, None]  # (1, H', W', 1)


@cached_tensor()
def _window_mask(height, width, window, shift, device, dtype, masked_value):
    padded = padded_size(height, width, window)
    if shift == (0, 0) and padded == (height, width):
        return None
    labels = _map_labels(height, width, padded, window, shift, device)
    labels = torch.roll(labels, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    labels = window_partition(labels.float(), window).flatten(1).long()
    return label_mask(labels, labels, dtype, masked_value)


def window_attention_mask(
    height: int,
    width: int,
    window_size: int | tuple[int, int],
    shift: int | tuple[int, int] = 0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    masked_value: float = float("-inf"),
) -> torch.Tensor | None:
    """Mask for (shifted) window attention on an ``height x width`` map padded to a multiple of the window.

    The map is padded at the bottom/right, then rolled by ``-shift`` and partitioned into windows (the
    order of :func:`window_partition`). Returns ``(num_windows, N, N)`` with ``N = window_h * window_w``,
    0 where attention is allowed and ``masked_value`` (default ``-inf``) elsewhere, or ``None`` when nothing
    needs masking (no shift, no padding). Cached per (size, window, shift, device, dtype, masked_value):
    treat it as read-only.

    Args:
        height: ``H`` of the map before padding.
        width: ``W`` of the map before padding.
        window_size: ``window`` or ``(window_h, window_w)``.
        shift: cyclic shift of SW-MSA, ``0 <= shift < window`` per axis.
        device: device of the mask (default CPU).
        dtype: dtype of the mask.
        masked_value: added to masked scores; ``-100.0`` reproduces Swin / the official HMANet.

    Returns:
        ``(num_windows, N, N)`` or ``None``; ``num_windows`` counts the windows of one image of the padded map.

    Raises:
        ValueError: a window size below 1 or a shift outside ``[0, window)``.

    Examples:
        >>> from gridattn.functional import window_attention_mask
        >>> window_attention_mask(16, 16, 8) is None       # no shift, no padding: nothing to mask
        True
        >>> window_attention_mask(16, 16, 8, shift=4).shape
        torch.Size([4, 64, 64])
        >>> window_attention_mask(10, 16, 8).shape         # padded to 16 x 16
        torch.Size([4, 64, 64])
    """
    window = to_pair(window_size, "window_size")
    shift = check_shift(shift, window)
    device = torch.device(device if device is not None else "cpu")
    return _window_mask(height, width, window, shift, device, dtype, masked_value)


def grid_padding_labels(
    height: int, width: int, interval: int | tuple[int, int], *, device: torch.device | str | None = None
) -> torch.Tensor | None:
    """Per group of :func:`grid_partition` on the padded map: ``(groups, N)`` labels, one value for real
    tokens and another (:data:`PAD_LABEL`) for padding; ``None`` when the size needs no padding.

    :func:`label_mask` of these labels is :func:`grid_attention_mask`; slicing the query labels lets a large
    group's mask be built a block of queries at a time.

    Args:
        height: ``H`` of the map before padding.
        width: ``W`` of the map before padding.
        interval: ``interval`` or ``(interval_h, interval_w)``.
        device: device of the labels (default CPU).

    Returns:
        ``(interval_h * interval_w, N)`` int64 with ``N`` the tokens of one group of the padded map, or ``None``.

    Raises:
        ValueError: an interval below 1.
    """
    interval = to_pair(interval, "interval")
    padded = padded_size(height, width, interval)
    if padded == (height, width):
        return None
    labels = _map_labels(height, width, padded, padded, (0, 0), device)  # one label for real, one for padding
    return grid_partition(labels.float(), interval).flatten(1).long()


@cached_tensor()
def _grid_mask(height, width, interval, device, dtype):
    labels = grid_padding_labels(height, width, interval, device=device)
    return None if labels is None else label_mask(labels, labels, dtype)


def grid_attention_mask(
    height: int,
    width: int,
    interval: int | tuple[int, int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | None:
    """Mask for grid attention on an ``height x width`` map padded to a multiple of ``interval``.

    Returns ``(interval_h * interval_w, N, N)`` in the group order of :func:`grid_partition` (0 between real
    tokens, ``-inf`` between a real and a padding token), or ``None`` when the size needs no padding.
    Cached: treat it as read-only.

    Args:
        height: ``H`` of the map before padding.
        width: ``W`` of the map before padding.
        interval: ``interval`` or ``(interval_h, interval_w)``.
        device: device of the mask (default CPU).
        dtype: dtype of the mask.

    Raises:
        ValueError: an interval below 1.

    Examples:
        >>> from gridattn.functional import grid_attention_mask
        >>> grid_attention_mask(16, 16, 4) is None
        True
        >>> grid_attention_mask(15, 16, 4).shape           # padded to 16 x 16: 16 groups of 4 x 4 tokens
        torch.Size([16, 16, 16])
    """
    interval = to_pair(interval, "interval")
    return _grid_mask(height, width, interval, torch.device(device if device is not None else "cpu"), dtype)
