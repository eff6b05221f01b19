"""Overlapping cross-attention (HAT's OCA): queries from windows, keys and values from larger overlapping windows."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..functional._checks import check_feature_map, check_heads, check_positive
from ..functional.backends import check_backend
from ..functional.blocked import MAX_SCORES
from ..functional.padding import pad_to_multiple, unpad
from ..functional.partition import window_partition, window_reverse
from .window_attention import masked_window_attention

__all__ = ["OverlappingCrossAttention"]


def _overlapping_window_size(window_size: int, overlap_ratio: float) -> int:
    """Side of the key/value window around a ``window_size`` query window: ``int(window_size * overlap_ratio) +
    window_size``, as HAT computes it (HAT: window 16, ratio 0.5 -> 24).

    Raises:
        ValueError: a window below 1, a ratio that is not a finite number >= 0.
    """
    check_positive(window_size, "window_size")
    if isinstance(overlap_ratio, bool) or not isinstance(overlap_ratio, (int, float)):
        raise ValueError(f"overlap_ratio must be a number >= 0, got {overlap_ratio!r}")
    if not math.isfinite(overlap_ratio) or overlap_ratio < 0:
        raise ValueError(f"overlap_ratio must be a finite number >= 0, got {overlap_ratio!r}")
    return int(window_size * overlap_ratio) + window_size


class OverlappingCrossAttention(nn.Module):
    """HAT's overlapping cross-attention (the attention of its OCAB): queries from non-overlapping
    ``window x window`` windows, keys and values from the larger ``ows x ows`` window around each of them,
    ``ows = int(window_size * overlap_ratio) + window_size``, with a learned relative-position table.

    Query window ``(i, j)`` covers rows ``i·ws .. i·ws + ws - 1`` (columns alike); its key/value window covers rows
    ``i·ws - p .. i·ws - p + ows - 1`` with ``p = (ows - ws) // 2``: it sticks out by ``p`` rows above and
    ``ows - ws - p`` below (the same when ``ows - ws`` is even, as in HAT; HAT's unfold cannot handle an odd
    difference, which here adds the extra row and column at the bottom/right). Queries, keys and values are
    projected by one ``qkv`` linear layer, ``[q | k | v]`` with heads ``(heads, head_dim)`` in each, as in HAT.

    Any height and width work: the map is padded at the bottom/right to a multiple of the window and the output
    cropped back. Key positions outside the map (the padding to the multiple and the border the overlapping
    windows stick out by) are handled in one of two ways:

    * ``official_padding=False`` (default): they are masked out of attention (``mask_value`` added to their
      scores), so every query attends exactly the real tokens of its overlapping window clipped to the map.
    * ``official_padding=True``: HAT's behaviour. Every key position outside the map holds a zero key and a zero
      value (HAT projects ``qkv`` first and then zero-pads ``k`` and ``v`` in its unfold, so these are zeros, not
      the projection of zeros, which would be the bias) and is attended: its score is its position bias alone and
      it adds nothing to the output but takes its share of the softmax. On maps whose sides are multiples of the
      window (which the official model requires; its test wrapper reflection-pads the image) this equals HAT's
      ``OCAB`` attention; on other sizes the padding to the multiple is treated like the unfold's border (zeros,
      attended). ``mask_value`` is not used.

    Args:
        dim: channels in and out; ``num_heads`` must divide it.
        num_heads: number of heads.
        window_size: side of the square query windows.
        overlap_ratio: the key/value window is ``int(window_size * overlap_ratio)`` larger (HAT: 0.5).
        qkv_bias: bias in the query/key/value projection.
        mask_value: added to the scores of key positions outside the map (default mode). ``-inf`` (default)
            masks exactly.
        official_padding: attend zero keys/values outside the map as HAT does (see above) instead of masking them.
        backend: attention backend (``"sdpa"``, ``"xformers"``, ``"math"``), ``None`` for the default.
        max_scores: memory bound: the position bias and the mask are summed for at most this many score entries
            at a time (blocks of windows on large maps; see
            :func:`~gridattn.layers.window_attention.masked_window_attention`).

    Shapes:
        input ``(B, H, W, dim)`` -> output ``(B, H, W, dim)``.

    Attributes:
        qkv: ``nn.Linear(dim, 3 * dim)``; HAT's ``OCAB.qkv``.
        relative_position_bias_table: the learned parameter ``((ws + ows - 1)², num_heads)``, laid out as HAT's
            ``OCAB.relative_position_bias_table`` (see :meth:`position_bias`); truncated-normal init (std 0.02).
        proj: ``nn.Linear(dim, dim)``; HAT's ``OCAB.proj``. (OCAB's ``norm1``, ``norm2`` and ``mlp`` belong to
            the block around this layer: ``PreNorm(dim, this)`` then ``PreNorm(dim, Mlp(dim, 2 * dim))``.)
        relative_position_index: buffer (not in the state dict) ``(ws², ows²)``: the table row of every
            query/key pair.

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``, a window below 1, an overlap ratio that is not a
            finite number >= 0, ``max_scores`` below 1, an unknown backend; an input that is not a 4-D floating
            map with ``dim`` channels.

    Examples:
        >>> import torch
        >>> from gridattn import OverlappingCrossAttention
        >>> oca = OverlappingCrossAttention(dim=64, num_heads=4, window_size=8, overlap_ratio=0.5)
        >>> oca.overlap_window_size, oca.position_bias().shape       # 8x8 queries against 12x12 keys
        (12, torch.Size([4, 64, 144]))
        >>> oca(torch.randn(2, 30, 45, 64)).shape                    # any H, W
        torch.Size([2, 30, 45, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        *,
        overlap_ratio: float = 0.5,
        qkv_bias: bool = True,
        mask_value: float = float("-inf"),
        official_padding: bool = False,
        backend: str | None = None,
        max_scores: int = MAX_SCORES,
    ) -> None:
        super().__init__()
        self.head_dim = check_heads(dim, num_heads)
        self.overlap_window_size = _overlapping_window_size(window_size, overlap_ratio)
        check_positive(max_scores, "max_scores")
        check_backend(backend)
        self.dim, self.num_heads, self.window_size, self.overlap_ratio = dim, num_heads, window_size, overlap_ratio
        self.mask_value, self.official_padding = mask_value, bool(official_padding)
        self.backend, self.max_scores = backend, max_scores
        side = window_size + self.overlap_window_size - 1  # offsets -(ws-1) .. ows-1 per axis
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.empty(side * side, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("relative_position_index", self._index(), persistent=False)

    def _index(self) -> torch.Tensor:
        """``(ws², ows²)`` table rows, HAT's layout: for query ``(qy, qx)`` of its window and key ``(ky, kx)`` of
        the overlapping window (each in its own window's coordinates), offsets ``dy = ky - qy``, ``dx = kx - qx``
        in ``[1 - ws, ows - 1]``, row ``((dy + ws - ows + 1)·L + dx + ws - ows + 1) mod L²`` with ``L = ws + ows -
        1``. HAT's index is the same number without the ``mod``, negative for some pairs, and indexing wraps it."""
        ws, ows = self.window_size, self.overlap_window_size
        side = ws + ows - 1
        query = torch.arange(ws * ws)
        key = torch.arange(ows * ows)
        qy, qx = torch.div(query, ws, rounding_mode="floor"), query % ws
        ky, kx = torch.div(key, ows, rounding_mode="floor"), key % ows
        dy = ky[None, :] - qy[:, None]
        dx = kx[None, :] - qx[:, None]
        shift = ws - ows + 1
        return ((dy + shift) * side + (dx + shift)) % (side * side)

    def position_bias(self) -> torch.Tensor:
        """The position bias ``(num_heads, ws², ows²)`` of every query (raster order in its window) and key (raster
        order in the overlapping window), gathered from the table."""
        table = self.relative_position_bias_table
        return table[self.relative_position_index].permute(2, 0, 1).contiguous()

    def _outside_mask(self, height: int, width: int, windows: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """``(windows, 1, ows²)``: ``mask_value`` at key positions outside the ``height x width`` map, else 0."""
        ws, ows = self.window_size, self.overlap_window_size
        before = (ows - ws) // 2
        offsets = torch.arange(ows, device=like.device)
        rows = torch.arange(windows[0], device=like.device)[:, None] * ws - before + offsets  # (nh, ows)
        cols = torch.arange(windows[1], device=like.device)[:, None] * ws - before + offsets  # (nw, ows)
        inside_rows = (rows >= 0) & (rows < height)
        inside_cols = (cols >= 0) & (cols < width)
        inside = inside_rows[:, None, :, None] & inside_cols[None, :, None, :]  # (nh, nw, ows, ows)
        mask = torch.zeros(inside.shape, dtype=like.dtype, device=like.device)
        mask = mask.masked_fill(~inside, self.mask_value)
        return mask.reshape(windows[0] * windows[1], 1, ows * ows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim, weight=self.qkv.weight)
        batch, height, width, _ = x.shape
        ws, ows = self.window_size, self.overlap_window_size
        qkv = pad_to_multiple(self.qkv(x), ws)  # zeros below / right: q, k and v all zero there
        padded_h, padded_w = qkv.shape[1:3]
        windows = (padded_h // ws, padded_w // ws)
        q, kv = qkv[..., : self.dim], qkv[..., self.dim:]
        q = rearrange(window_partition(q, ws), "(b n) wh ww (heads d) -> b n heads (wh ww) d",
                      b=batch, heads=self.num_heads)
        # key/value windows: zero border of `before` rows/columns above/left and `after` below/right, so that
        # window i covers padded rows i*ws .. i*ws + ows - 1, i.e. map rows i*ws - before .. i*ws - before + ows - 1
        before = (ows - ws) // 2
        after = ows - ws - before
        kv = F.pad(kv, (0, 0, before, after, before, after))
        kv = kv.unfold(1, ows, ws).unfold(2, ows, ws)  # (b, nh, nw, 2 * dim, ows, ows), a view
        k, v = rearrange(kv, "b nh nw (two heads d) oh ow -> two b (nh nw) heads (oh ow) d",
                         two=2, heads=self.num_heads)
        bias = self.position_bias()
        mask = None
        if not self.official_padding and (ows > ws or padded_h != height or padded_w != width):
            mask = self._outside_mask(height, width, windows, bias)
        out = masked_window_attention(q, k, v, bias, mask, max_scores=self.max_scores, backend=self.backend)
        out = rearrange(out, "b n heads (wh ww) d -> (b n) wh ww (heads d)", wh=ws)
        out = window_reverse(out, ws, padded_h, padded_w)
        return self.proj(unpad(out, height, width))

    def extra_repr(self) -> str:
        official = ", official_padding=True" if self.official_padding else ""
        return (f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
                f"overlap_ratio={self.overlap_ratio}, overlap_window_size={self.overlap_window_size}{official}")
