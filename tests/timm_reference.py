"""timm's own attention blocks driven with their padding masked: the reference for converted models at sizes that
are not multiples of the window or grid.

Each function runs the timm block's own attention module (its qkv, position bias and projection code) on
partitions of the zero-padded map, adding ``-inf`` for every padding key; Swin's shifted windows are rolled after
padding, with timm's own region mask on the padded map (the order the original Swin detection code uses). None of
gridattn's code is used. :func:`masked` patches every block of a timm model this way.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from timm.models import maxxvit, swin_transformer, swin_transformer_v2


def _pad(x: torch.Tensor, multiple: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad ``(B, H, W, C)`` at the bottom/right; also the validity map ``(1, H', W', 1)`` (1 real, 0 padding)."""
    _, height, width, _ = x.shape
    pad_h = math.ceil(height / multiple[0]) * multiple[0] - height
    pad_w = math.ceil(width / multiple[1]) * multiple[1] - width
    valid = torch.ones(1, height, width, 1, dtype=x.dtype, device=x.device)
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h)), F.pad(valid, (0, 0, 0, pad_w, 0, pad_h))


def _key_mask(valid_windows: torch.Tensor) -> torch.Tensor:
    """``(windows, N)`` validity -> additive ``(windows, 1, N)``: ``-inf`` for padding keys."""
    zero = torch.zeros((), dtype=valid_windows.dtype)
    return torch.where(valid_windows > 0, zero, -torch.inf)[:, None, :]


def _attention_with_extra_bias(attn: torch.nn.Module, windows: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """timm's ``AttentionCl`` on ``windows`` with ``extra`` added to its position bias (or as the bias)."""
    rel_pos = attn.rel_pos
    if rel_pos is None:
        return attn(windows, shared_rel_pos=extra)
    own = rel_pos.get_bias
    rel_pos.get_bias = lambda: own() + extra  # the fused and the plain path both read get_bias()
    try:
        return attn(windows)
    finally:
        del rel_pos.get_bias


def partition_attention(attn: torch.nn.Module, x: torch.Tensor, size: tuple[int, int], block: bool) -> torch.Tensor:
    """MaxViT's window (``block``) or grid partition attention of ``(B, H, W, C)``, padding masked."""
    height, width = x.shape[1:3]
    padded, valid = _pad(x, size)
    partition, reverse = ((maxxvit.window_partition, maxxvit.window_reverse) if block
                          else (maxxvit.grid_partition, maxxvit.grid_reverse))
    windows = partition(padded, size)
    mask = _key_mask(partition(valid, size).flatten(1))  # (windows of one image, 1, N)
    mask = mask.repeat(x.shape[0], 1, 1)[:, None]  # (B * windows, 1, 1, N)
    out = _attention_with_extra_bias(attn, windows, mask)
    return reverse(out, size, padded.shape[1:3])[:, :height, :width]


def _maxvit_partition_attn(self, x: torch.Tensor) -> torch.Tensor:
    return partition_attention(self.attn, x, tuple(self.partition_size), self.partition_block)


def _parallel_partition_attn(self, x: torch.Tensor) -> torch.Tensor:
    size = tuple(self.partition_size)
    return torch.cat([partition_attention(self.attn_block, x, size, True),
                      partition_attention(self.attn_grid, x, size, False)], dim=-1)


def swin_attention(self, x: torch.Tensor) -> torch.Tensor:
    """Swin's ``_attn`` with the padding masked: pad, then roll, timm's region mask on the padded map."""
    _, height, width, channels = x.shape
    window, shift = tuple(self.window_size), tuple(self.shift_size)
    padded, valid = _pad(x, window)
    region = self.get_attn_mask(padded)  # (windows, N, N) with -100 between regions, or None
    if any(shift):
        padded = torch.roll(padded, (-shift[0], -shift[1]), (1, 2))
        valid = torch.roll(valid, (-shift[0], -shift[1]), (1, 2))
    area = window[0] * window[1]
    v2 = isinstance(self, swin_transformer_v2.SwinTransformerV2Block)
    partition = swin_transformer_v2.window_partition if v2 else swin_transformer.window_partition
    windows = partition(padded, window).view(-1, area, channels)
    mask = _key_mask(partition(valid, window).view(-1, area))  # (windows, 1, N)
    mask = mask.expand(-1, area, -1) if region is None else mask + region
    out = self.attn(windows, mask=mask).view(-1, *window, channels)
    if v2:  # the same operation as V1's, with the size as one argument
        out = swin_transformer_v2.window_reverse(out, window, padded.shape[1:3])
    else:
        out = swin_transformer.window_reverse(out, window, *padded.shape[1:3])
    if any(shift):
        out = torch.roll(out, shift, (1, 2))
    return out[:, :height, :width]


def masked(model: torch.nn.Module) -> torch.nn.Module:
    """Patch every Swin (V1, V2) / MaxViT attention block of a timm model (in place) to mask its padding."""
    for module in model.modules():
        if isinstance(module, (swin_transformer.SwinTransformerBlock, swin_transformer_v2.SwinTransformerV2Block)):
            module._attn = types.MethodType(swin_attention, module)
        elif isinstance(module, maxxvit.PartitionAttentionCl):
            module._partition_attn = types.MethodType(_maxvit_partition_attn, module)
        elif isinstance(module, maxxvit.ParallelPartitionAttention):
            module._partition_attn = types.MethodType(_parallel_partition_attn, module)
    return model
