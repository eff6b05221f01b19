"""Grid multi-head self-attention (Grid-MSA): attention among tokens sampled at a fixed interval or in a fixed
number of groups."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..functional._checks import check_feature_map, check_positive, check_probability, head_width, to_pair
from ..functional.backends import attention, bias_for_kernel, check_backend
from ..functional.blocked import MAX_SCORES, block_length, blocked_attention
from ..functional.masks import grid_attention_mask, grid_padding_labels, label_mask
from ..functional.padding import pad_to_multiple, padded_size, unpad
from ..functional.partition import grid_partition, grid_reverse
from .position import PositionBias, PositionBiasKind, bias_rows, make_position_bias


class GridAttention(nn.Module):
    """Grid-MSA: global attention inside sparse grids spread over the whole map (HMANet, MaxViT).

    The map is split by :func:`~gridattn.functional.grid_partition`: group ``(i, j)`` holds the tokens
    ``(a * interval + i, b * interval + j)``. Two ways to fix the grid:

    * ``interval=K`` (HMANet): tokens ``K`` apart; the groups grow with the map (``H/K x W/K`` tokens each).
    * ``grid_size=G`` (MaxViT): ``G x G`` tokens per group; the interval follows the map, ``ceil(H / G)``.

    Inside each group, per head:

    * two-stage (default, HMANet): with ``G = grid_proj(x)``,
      ``X̂ = softmax(G Kᵀ/√d + B₁) V`` then ``out = softmax(Q Gᵀ/√d + B₂) X̂``;
    * one-stage (``two_stage=False``, MaxViT): ``out = softmax(Q Kᵀ/√d + B₁) V``.

    ``B₁``, ``B₂`` are separate position biases (``position_bias``). Any height and width work: the map is
    zero-padded to a multiple of the interval, padded tokens are masked out of both stages, and the output is
    cropped back (equal to grid attention over the real tokens only). With ``grid_size`` a map that is not a
    multiple of ``G`` gets the interval ``ceil(H / G)``: every group keeps at most ``G x G`` tokens, the last
    rows and columns of some groups being masked padding.

    Args:
        dim: output channels (and, by default, input and attention channels).
        num_heads: number of heads; must divide ``dim`` unless ``head_dim`` is given.
        interval: sampling interval (int or pair); give this or ``grid_size``.
        grid_size: tokens per group along each axis (int or pair); give this or ``interval``.
        in_dim: input channels, default ``dim``.
        head_dim: channels per head, default ``dim // num_heads``; the attention is ``num_heads * head_dim``
            wide, and must equal ``dim`` when ``out_proj=False``.
        two_stage: use the grid projection (HMANet) or plain one-stage attention.
        qkv_bias: bias in the query/key/value projection.
        out_proj: end with a ``Linear(num_heads * head_dim, dim)``; HMANet's GAB has none (its ``fc`` follows the
            concat).
        position_bias: ``"dynamic"`` (HMANet's MLP, default), ``"continuous"`` (MLP over log-spaced offsets),
            ``"table"`` (learned table; needs ``grid_size``) or ``"none"``; see
            :func:`~gridattn.layers.position.make_position_bias`.
        bias_hidden_dim: width of an MLP bias; ``"dynamic"`` defaults to ``max(4, width // 16)``, the official
            HMANet formula ``dim // 4 // 4`` (5 for its 90 channels) where that is at least 4.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        backend: attention backend (``"sdpa"``, ``"xformers"``, ``"math"``), ``None`` for the default.
        max_scores: memory bound: at most this many bias entries (heads x queries x keys, times the groups
            when padding is masked) are built at once. Larger groups (e.g. 4096 tokens, a 256x256 map at
            interval 4) are attended a block of queries at a time, with the bias built per block from the
            bias's table; the result is the same. Below the bound the whole bias is built (and, inside
            :func:`~gridattn.layers.bias_cache`, kept).

    Attributes:
        position_biases: ``[B₁]`` or ``[B₁, B₂]`` (:class:`~gridattn.layers.position.PositionBias`), empty for
            ``"none"``.

    Shapes:
        input ``(B, H, W, in_dim)`` -> output ``(B, H, W, dim)``.

    Raises:
        ValueError: both or neither of ``interval`` and ``grid_size``; ``dim`` not divisible by ``num_heads``
            (without ``head_dim``); a size or ``max_scores`` below 1; ``position_bias="table"`` with
            ``interval``; an input that is not 4-D or has the wrong number of channels.

    Examples:
        >>> import torch
        >>> from gridattn import GridAttention
        >>> layer = GridAttention(dim=64, num_heads=4, interval=4)
        >>> layer(torch.randn(1, 37, 50, 64)).shape        # groups of 10 x 13 tokens, 4 pixels apart
        torch.Size([1, 37, 50, 64])
        >>> maxvit = GridAttention(dim=64, num_heads=2, grid_size=7, head_dim=32, two_stage=False,
        ...                        position_bias="table")
        >>> maxvit(torch.randn(1, 50, 45, 64)).shape        # 7 x 7 groups, 8 and 7 pixels apart
        torch.Size([1, 50, 45, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        interval: int | tuple[int, int] | None = None,
        *,
        grid_size: int | tuple[int, int] | None = None,
        in_dim: int | None = None,
        head_dim: int | None = None,
        two_stage: bool = True,
        qkv_bias: bool = True,
        out_proj: bool = True,
        position_bias: PositionBiasKind = "dynamic",
        bias_hidden_dim: int | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str | None = None,
        max_scores: int = MAX_SCORES,
    ) -> None:
        super().__init__()
        if (interval is None) == (grid_size is None):
            raise ValueError("give exactly one of interval= (HMANet: fixed spacing) and grid_size= (MaxViT: fixed "
                             f"group size), got interval={interval!r}, grid_size={grid_size!r}")
        self.interval = None if interval is None else to_pair(interval, "interval")
        self.grid_size = None if grid_size is None else to_pair(grid_size, "grid_size")
        self.head_dim = head_width(dim, num_heads, head_dim)
        width = num_heads * self.head_dim
        if not out_proj and width != dim:
            raise ValueError(f"out_proj=False needs num_heads * head_dim == dim, got {num_heads} * {self.head_dim} "
                             f"!= {dim}")
        check_positive(max_scores, "max_scores")
        self.max_scores = max_scores
        self.dim, self.num_heads = dim, num_heads
        self.in_dim = dim if in_dim is None else in_dim
        check_positive(self.in_dim, "in_dim")
        self.two_stage = two_stage
        check_probability(attn_drop, "attn_drop")
        check_backend(backend)
        self.attn_drop, self.backend = attn_drop, backend
        self.qkv = nn.Linear(self.in_dim, 3 * width, bias=qkv_bias)
        self.grid_proj = nn.Linear(self.in_dim, width) if two_stage else None
        biases = [make_position_bias(position_bias, num_heads=num_heads, attention_dim=width,
                                     window_size=self.grid_size, hidden_dim=bias_hidden_dim)
                  for _ in range(2 if two_stage else 1)]
        self.position_biases = nn.ModuleList(b for b in biases if b is not None)  # [B₁] or [B₁, B₂]; [] for none
        self.proj = nn.Linear(width, dim) if out_proj else nn.Identity()
        self.proj_drop = nn.Dropout(proj_drop)

    def interval_for(self, height: int, width: int) -> tuple[int, int]:
        """The sampling interval on an ``height x width`` map: fixed, or ``ceil(size / grid_size)``."""
        if self.interval is not None:
            return self.interval
        return -(-height // self.grid_size[0]), -(-width // self.grid_size[1])

    def _groups(self, x: torch.Tensor, interval: tuple[int, int], batch: int) -> torch.Tensor:
        """``(B, H', W', heads*d)`` -> ``(B, groups, heads, N, d)``."""
        return rearrange(grid_partition(x, interval), "(b g) gh gw (heads d) -> b g heads (gh gw) d",
                         b=batch, heads=self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.in_dim, weight=self.qkv.weight)
        batch, height, width, _ = x.shape
        interval = self.interval_for(height, width)
        x = pad_to_multiple(x, interval)
        padded_h, padded_w = x.shape[1:3]
        group_size = (padded_h // interval[0], padded_w // interval[1])
        q, k, v = rearrange(grid_partition(self.qkv(x), interval),
                            "(b g) gh gw (three heads d) -> three b g heads (gh gw) d",
                            b=batch, three=3, heads=self.num_heads)
        biases = list(self.position_biases) or [None, None]
        attend = dict(size=(height, width), interval=interval, group_size=group_size)
        if self.two_stage:
            grid = self._groups(self.grid_proj(x), interval, batch)
            summary = self._attend(grid, k, v, biases[0], **attend)
            out = self._attend(q, grid, summary, biases[1], **attend)
        else:
            out = self._attend(q, k, v, biases[0], **attend)
        out = rearrange(out, "b g heads (gh gw) d -> (b g) gh gw (heads d)", gh=group_size[0])
        out = unpad(grid_reverse(out, interval, padded_h, padded_w), height, width)
        return self.proj_drop(self.proj(out))

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        position_bias: PositionBias | None,
        *,
        size: tuple[int, int],
        interval: tuple[int, int],
        group_size: tuple[int, int],
    ) -> torch.Tensor:
        """Attention in every group, ``(B, groups, heads, N, d)`` each, with the position bias and the padding
        mask (real tokens never see padding); in blocks of queries when the whole bias would exceed
        ``max_scores`` entries."""
        dropout_p = self.attn_drop if self.training else 0.0
        tokens, groups = query.shape[-2], query.shape[1]
        padded = padded_size(*size, interval) != size
        block = block_length(self.max_scores, self.num_heads * tokens * (groups if padded else 1))
        if block >= tokens:
            # (heads, N, N), in the kernel's dtype before the mask broadcasts it to (groups, heads, N, N)
            bias = None if position_bias is None else bias_for_kernel(position_bias(group_size), query)
            mask = grid_attention_mask(*size, interval, device=query.device,
                                       dtype=query.dtype if bias is None else bias.dtype)
            if mask is not None:  # (groups, N, N)
                bias = mask[:, None] if bias is None else bias + mask[:, None]
            return attention(query, key, value, bias, dropout_p=dropout_p, backend=self.backend)
        if position_bias is None and not padded:
            return attention(query, key, value, None, dropout_p=dropout_p, backend=self.backend)
        table = None if position_bias is None else position_bias.table(group_size)  # ((2h-1)(2w-1), heads)
        labels = grid_padding_labels(*size, interval, device=query.device)  # (groups, N) or None

        def block_bias(start: int, stop: int) -> torch.Tensor:  # (heads, queries, N) and/or (groups, 1, queries, N)
            bias = None
            if table is not None:
                bias = bias_rows(table, group_size, start, stop)
            if labels is not None:
                mask = label_mask(labels[:, start:stop], labels, query.dtype if bias is None else bias.dtype)[:, None]
                bias = mask if bias is None else bias + mask
            return bias

        return blocked_attention(query, key, value, block_bias, axis="queries", block=block, dropout_p=dropout_p,
                                 backend=self.backend)

    def extra_repr(self) -> str:
        grid = f"interval={self.interval}" if self.interval is not None else f"grid_size={self.grid_size}"
        return f"dim={self.dim}, num_heads={self.num_heads}, {grid}, two_stage={self.two_stage}"
