"""GAB: HMANet's grid attention block (window, shifted-window and grid attention side by side, post-norm)."""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from torch import nn

from ..functional._checks import check_feature_map, check_positive
from ..functional.masks import window_attention_mask
from ..functional.partition import window_partition, window_reverse
from ..layers import GridAttention, Mlp, PostNorm, WindowAttention
from ..layers.window_attention import masked_window_attention

Numerics = Literal["corrected", "official"]
"""The numerics mode of :class:`GAB`, :class:`~gridattn.blocks.RHTB` and :class:`~gridattn.models.HMANet`."""
OFFICIAL_MASK_VALUE = -100.0  # what the official code adds to masked scores (Swin's convention)
"""What the official code adds to masked scores (Swin's convention); used in ``"official"`` numerics."""


class GAB(nn.Module):
    """Three attention branches on the same input, concatenated, projected, post-normed, plus an MLP.

    Branches (channels for HMANet's ``dim=180``, 6 heads): W-MSA on ``dim/4`` channels (45, 3 heads),
    SW-MSA on ``dim/4`` (45, 3 heads), two-stage Grid-MSA on ``dim/2`` (90, 3 heads); each computes its
    queries/keys/values from the un-normalised input. Then ``x = x + LN1(fc(concat))`` and
    ``x = x + LN2(mlp(x))``.

    ``numerics="official"`` reproduces two bugs of the official code in the shifted branch: the rolled map
    is cut into consecutive raster runs of ``window**2`` tokens instead of windows (the shifted-window mask
    is still added), and the result is rolled back along the token and the **channel** axes of a
    ``(B, H*W, C)`` tensor; its mask adds ``-100`` (not ``-inf``), as the official code does.
    ``"corrected"`` (default) runs a real SW-MSA with an exact mask. Official numerics need H and W
    to be multiples of ``window_size`` (HMANet pads to that).

    Args:
        dim: channels; ``dim`` divisible by 4 and ``num_heads`` even.
        num_heads: heads of the whole block; each branch gets ``num_heads // 2``.
        window_size: window of the two window branches (shift ``window_size // 2``).
        interval: interval of the grid branch.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias: bias in the query/key/value projections.
        numerics: ``"corrected"`` or ``"official"``.
        grid_bias_dim: width of the grid branch's position-bias MLPs (``None``: GridAttention's default).
        backend: attention backend, ``None`` for the default.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``; with official numerics H and W must be multiples of
        ``window_size``.

    Raises:
        ValueError: ``dim`` not divisible by 4, an odd ``num_heads``, an unknown ``numerics``; in forward, an
            input that is not a 4-D map with ``dim`` channels, or (official numerics) a size that is not a
            multiple of ``window_size``.

    Examples:
        >>> import torch
        >>> from gridattn.blocks import GAB
        >>> gab = GAB(dim=48, num_heads=4, window_size=8, interval=4)   # branches of 12, 12 and 24 channels
        >>> gab(torch.randn(1, 24, 20, 48)).shape
        torch.Size([1, 24, 20, 48])
        >>> official = GAB(dim=48, num_heads=4, window_size=8, interval=4, numerics="official")
        >>> official.load_state_dict(gab.state_dict())   # same weights, other numerics
        <All keys matched successfully>
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        window_size: int,
        interval: int,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        numerics: Numerics = "corrected",
        grid_bias_dim: int | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        if dim % 4:
            raise ValueError(f"GAB needs dim divisible by 4 (two quarter-width window branches), got {dim}")
        if num_heads % 2:
            raise ValueError(f"GAB needs an even num_heads (each branch gets half), got {num_heads}")
        if numerics not in ("corrected", "official"):
            raise ValueError(f"numerics must be 'corrected' or 'official', got {numerics!r}")
        self.dim, self.window_size, self.numerics = dim, window_size, numerics
        heads = num_heads // 2
        quarter = dict(in_dim=dim, qkv_bias=qkv_bias, backend=backend)
        self.window_attn = WindowAttention(dim // 4, heads, window_size, 0, **quarter)
        self.window_attn_s = WindowAttention(dim // 4, heads, window_size, window_size // 2, **quarter)
        self.grid_attn = GridAttention(dim // 2, heads, interval, out_proj=False, bias_hidden_dim=grid_bias_dim, **quarter)
        self.fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = PostNorm(dim, Mlp(dim, int(dim * mlp_ratio)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim)
        shifted = self._official_shifted_branch(x) if self.numerics == "official" else self.window_attn_s(x)
        branches = torch.cat([self.window_attn(x), shifted, self.grid_attn(x)], dim=-1)
        x = x + self.norm1(self.fc(branches))
        return self.mlp(x)

    def _official_shifted_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The official code's shifted branch, bugs included (see the class docstring)."""
        layer = self.window_attn_s
        batch, height, width, _ = x.shape
        window, shift = self.window_size, layer.shift[0]
        if height % window or width % window:
            raise ValueError(f"official numerics need H, W multiples of {window}, got {height}x{width}")
        qkv = torch.roll(layer.qkv(x), shifts=(-shift, -shift), dims=(1, 2))
        # raster runs of window**2 tokens, not windows: the first bug
        q, k, v = rearrange(qkv, "b h w (three heads d) -> three b (h w) heads d", three=3, heads=layer.num_heads)
        q, k, v = (rearrange(t, "b (n t) heads d -> b n heads t d", t=window * window) for t in (q, k, v))
        mask = window_attention_mask(
            height, width, window, shift, device=x.device,
            dtype=layer.relative_position_bias.relative_position_bias_table.dtype, masked_value=OFFICIAL_MASK_VALUE,
        )
        out = masked_window_attention(q, k, v, layer.relative_position_bias(), mask, max_scores=layer.max_scores,
                                      backend=layer.backend)
        out = layer.proj(rearrange(out, "b n heads t d -> (b n) t (heads d)"))
        out = window_reverse(out.reshape(-1, window, window, layer.dim), window, height, width)
        # the roll back acts on a (B, H*W, C) tensor: tokens and channels are rolled, the second bug
        out = torch.roll(out.reshape(batch, height * width, layer.dim), shifts=(shift, shift), dims=(1, 2))
        return out.reshape(batch, height, width, layer.dim)
