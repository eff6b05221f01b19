"""Grid multi-head self-attention (Grid-MSA): attention among tokens sampled at a fixed interval."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..functional._checks import check_feature_map, check_heads, check_positive, check_probability, to_pair
from ..functional.backends import attention, check_backend
from ..functional.blocked import MAX_SCORES, block_length, blocked_attention
from ..functional.masks import grid_attention_mask, grid_padding_labels, label_mask
from ..functional.padding import pad_to_multiple, padded_size, unpad
from ..functional.partition import grid_partition, grid_reverse
from ..functional.position import relative_position_rows
from .position import DynamicPositionBias


class GridAttention(nn.Module):
    """HMANet's Grid-MSA: global attention inside interval grids, through a learned grid projection.

    The map is split by :func:`~gridattn.functional.grid_partition`: group ``(i, j)`` holds the tokens
    ``(a * interval + i, b * interval + j)``, spread over the whole map. Inside each group, per head:

    * two-stage (default, HMANet): with ``G = grid_proj(x)``,
      ``X̂ = softmax(G Kᵀ/√d + B₁) V`` then ``out = softmax(Q Gᵀ/√d + B₂) X̂``;
    * one-stage (``two_stage=False``): ``out = softmax(Q Kᵀ/√d + B₁) V``.

    ``B₁``, ``B₂`` come from separate :class:`DynamicPositionBias` MLPs, so any group size works. Any
    height and width work: the map is zero-padded to a multiple of ``interval``, padded tokens are masked out
    of both stages, and the output is cropped back (equal to grid attention over the real tokens only).

    Args:
        dim: attention (and output) channels; split into ``num_heads`` heads.
        num_heads: number of heads; must divide ``dim``.
        interval: sampling interval (int or pair).
        in_dim: input channels, default ``dim``.
        two_stage: use the grid projection (HMANet) or plain one-stage attention.
        qkv_bias: bias in the query/key/value projection.
        out_proj: end with a ``Linear(dim, dim)``; HMANet's GAB has none (its ``fc`` follows the concat).
        bias_hidden_dim: width of the position-bias MLPs, default ``max(4, dim // 16)``: the official
            HMANet formula ``dim // 4 // 4`` (5 for its 90 channels) where that is at least 4. Below 64
            channels the official formula gives 0 (a crash) to 3; a width of 1 makes the MLP constant
            (LayerNorm over one channel), so gridattn keeps at least 4.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        backend: attention backend (``"sdpa"``, ``"xformers"``, ``"math"``), ``None`` for the default.
        max_scores: memory bound: at most this many bias entries (heads x queries x keys, times the groups
            when padding is masked) are built at once. Larger groups (e.g. 4096 tokens, a 256x256 map at
            interval 4) are attended a block of queries at a time, with the bias built per block from the
            MLP's table; the result is the same. Below the bound the whole bias is built and, in eval mode,
            cached.

    Shapes:
        input ``(B, H, W, in_dim)`` -> output ``(B, H, W, dim)``.

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``, interval < 1, ``max_scores`` < 1, an input that is not
            4-D or has the wrong number of channels.

    Examples:
        >>> import torch
        >>> from gridattn import GridAttention
        >>> layer = GridAttention(dim=64, num_heads=4, interval=4)
        >>> layer(torch.randn(1, 37, 50, 64)).shape        # groups of 10 x 13 tokens, 4 pixels apart
        torch.Size([1, 37, 50, 64])
        >>> plain = GridAttention(dim=64, num_heads=4, interval=4, two_stage=False, backend="math")
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        interval: int | tuple[int, int],
        *,
        in_dim: int | None = None,
        two_stage: bool = True,
        qkv_bias: bool = True,
        out_proj: bool = True,
        bias_hidden_dim: int | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str | None = None,
        max_scores: int = MAX_SCORES,
    ) -> None:
        super().__init__()
        check_heads(dim, num_heads)
        check_positive(max_scores, "max_scores")
        self.max_scores = max_scores
        self.dim, self.num_heads = dim, num_heads
        self.in_dim = dim if in_dim is None else in_dim
        check_positive(self.in_dim, "in_dim")
        self.interval = to_pair(interval, "interval")
        self.two_stage = two_stage
        check_probability(attn_drop, "attn_drop")
        check_backend(backend)
        self.attn_drop, self.backend = attn_drop, backend
        hidden = max(4, dim // 16) if bias_hidden_dim is None else bias_hidden_dim
        self.qkv = nn.Linear(self.in_dim, 3 * dim, bias=qkv_bias)
        self.grid_proj = nn.Linear(self.in_dim, dim) if two_stage else None
        # [B₁] for one stage, [B₁, B₂] for two stages
        self.position_biases = nn.ModuleList(
            DynamicPositionBias(num_heads, hidden) for _ in range(2 if two_stage else 1)
        )
        self.proj = nn.Linear(dim, dim) if out_proj else nn.Identity()
        self.proj_drop = nn.Dropout(proj_drop)

    def _groups(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """``(B, H', W', heads*d)`` -> ``(B, groups, heads, N, d)``."""
        return rearrange(grid_partition(x, self.interval), "(b g) gh gw (heads d) -> b g heads (gh gw) d",
                         b=batch, heads=self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.in_dim, weight=self.qkv.weight)
        batch, height, width, _ = x.shape
        x = pad_to_multiple(x, self.interval)
        padded_h, padded_w = x.shape[1:3]
        group_size = (padded_h // self.interval[0], padded_w // self.interval[1])
        q, k, v = self._split_qkv(x, batch)
        size = (height, width)
        if self.two_stage:
            grid = self._groups(self.grid_proj(x), batch)
            summary = self._attend(grid, k, v, self.position_biases[0], size, group_size)
            out = self._attend(q, grid, summary, self.position_biases[1], size, group_size)
        else:
            out = self._attend(q, k, v, self.position_biases[0], size, group_size)
        out = rearrange(out, "b g heads (gh gw) d -> (b g) gh gw (heads d)", gh=group_size[0])
        out = unpad(grid_reverse(out, self.interval, padded_h, padded_w), height, width)
        return self.proj_drop(self.proj(out))

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        position_bias: DynamicPositionBias,
        size: tuple[int, int],
        group_size: tuple[int, int],
    ) -> torch.Tensor:
        """Attention in every group, ``(B, groups, heads, N, d)`` each, with the position bias and the padding
        mask (real tokens never see padding); in blocks of queries when the whole bias would exceed
        ``max_scores`` entries."""
        dropout_p = self.attn_drop if self.training else 0.0
        tokens, groups = query.shape[-2], query.shape[1]
        padded = padded_size(*size, self.interval) != size
        block = block_length(self.max_scores, self.num_heads * tokens * (groups if padded else 1))
        if block >= tokens:
            bias = position_bias(group_size)  # (heads, N, N)
            mask = grid_attention_mask(*size, self.interval, device=query.device, dtype=bias.dtype)
            if mask is not None:  # (groups, N, N)
                bias = bias + mask[:, None]
            return attention(query, key, value, bias, dropout_p=dropout_p, backend=self.backend)
        table = position_bias.table(group_size)  # ((2h-1)(2w-1), heads)
        labels = grid_padding_labels(*size, self.interval, device=query.device)  # (groups, N) or None

        def block_bias(start: int, stop: int) -> torch.Tensor:  # (heads, queries, N) [+ (groups, 1, queries, N)]
            bias = table[relative_position_rows(group_size, start, stop, table.device)].permute(2, 0, 1).contiguous()
            if labels is not None:
                bias = bias + label_mask(labels[:, start:stop], labels, bias.dtype)[:, None]
            return bias

        return blocked_attention(query, key, value, block_bias, axis="queries", block=block, dropout_p=dropout_p,
                                 backend=self.backend)

    def _split_qkv(self, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = rearrange(
            grid_partition(self.qkv(x), self.interval),
            "(b g) gh gw (three heads d) -> three b g heads (gh gw) d",
            b=batch,
            three=3,
            heads=self.num_heads,
        )
        return q, k, v

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, interval={self.interval}, two_stage={self.two_stage}"
        )
