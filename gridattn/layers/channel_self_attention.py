"""Self-attention across channels over the whole map (XCiT's cross-covariance attention, Restormer's transposed
attention, DAT's channel attention)."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_feature_map, check_heads, check_probability


class ChannelSelfAttention(nn.Module):
    """Each head's channels attend to each other, with the map's pixels as their features.

    Per head, queries, keys and values are ``(d, H*W)``: ``d = dim // num_heads`` channels of ``H*W`` pixels.
    Queries and keys are L2-normalised over the pixels, and the ``d x d`` scores ``q kᵀ`` are scaled by a
    learned per-head ``temperature`` (init 1) before the softmax. Time and memory grow linearly with the number
    of pixels, and no padding is involved: any height and width.

    Args:
        dim: channels in and out.
        num_heads: heads; must divide ``dim``.
        qkv_bias: bias in the query/key/value projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``. :meth:`attend` gives the attention before the projection and
        the values, both ``(B, H, W, dim)`` (for :class:`~gridattn.layers.AdaptiveInteraction`).

    Attributes:
        temperature: ``(num_heads, 1, 1)``, the learned scale of each head's scores.

    Raises:
        ValueError: ``num_heads`` that does not divide ``dim``; an input that is not a 4-D map with ``dim``
            channels.

    Examples:
        >>> import torch
        >>> from gridattn import ChannelSelfAttention
        >>> ChannelSelfAttention(dim=60, num_heads=6)(torch.randn(2, 13, 21, 60)).shape
        torch.Size([2, 13, 21, 60])
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        check_heads(dim, num_heads)
        check_probability(attn_drop, "attn_drop")
        self.dim, self.num_heads = dim, num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention before the projection, and the values."""
        check_feature_map(x, self.dim, weight=self.qkv.weight)
        batch, height, width, _ = x.shape
        heads = self.num_heads
        projected = self.qkv(x).view(batch, height * width, 3 * self.dim)
        qkv = projected.view(batch, height * width, 3, heads, self.dim // heads)
        q, k, _ = qkv.permute(2, 0, 3, 4, 1)  # each (B, heads, d, H*W)
        # cos(q_i, k_j) as q_i·k_j / (|q_i| |k_j|) (F.normalize's eps), no normalised copies: the squares summed
        # down the columns of the (pixels, 3 * dim) projection run at memory speed (a norm over a strided axis,
        # 3x slower at 256x256), in float32 at least (also under autocast)
        accurate = torch.promote_types(q.dtype, torch.float32)
        norms = qkv[:, :, :2].to(accurate).square().sum(dim=1).sqrt().clamp_min(1e-12).to(q.dtype)  # (B, 2, heads, d)
        scores = (q @ k.transpose(-2, -1)) / (norms[:, 0, :, :, None] * norms[:, 1, :, None, :])  # (B, heads, d, d)
        weights = self.attn_drop((scores * self.temperature.to(scores.dtype)).softmax(dim=-1))
        # the heads' d x d weights as one block-diagonal (dim, dim) matrix: one product of the values writes the
        # output channels-last, where a per-head product would write (heads, d, pixels) and need a transpose
        eye = torch.eye(heads, dtype=weights.dtype, device=weights.device)
        block_diagonal = torch.einsum("bhij,hg->bhigj", weights, eye).reshape(batch, self.dim, self.dim)
        values = projected[:, :, 2 * self.dim:]
        out = (values @ block_diagonal.transpose(-2, -1)).view(batch, height, width, self.dim)
        return out, values.view(batch, height, width, self.dim)

    def project_out(self, x: torch.Tensor) -> torch.Tensor:
        """The output projection (and its dropout): ``(..., dim)`` -> same."""
        return self.proj_drop(self.proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.attend(x)[0])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
