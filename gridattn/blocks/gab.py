"""GAB: HMANet's grid attention block (window, shifted-window and grid attention side by side, post-norm)."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_feature_map, check_positive
from ..layers import GridAttention, Mlp, PostNorm, WindowAttention
from .numerics import Numerics, OfficialShiftedWindowAttention, check_numerics


class GAB(nn.Module):
    """Three attention branches on the same input, concatenated, projected, post-normed, plus an MLP.

    Branches (channels for HMANet's ``dim=180``, 6 heads): W-MSA on ``dim/4`` channels (45, 3 heads),
    SW-MSA on ``dim/4`` (45, 3 heads), two-stage Grid-MSA on ``dim/2`` (90, 3 heads); each computes its
    queries/keys/values from the un-normalised input. Then ``x = x + LN1(fc(concat))`` and
    ``x = x + LN2(mlp(x))``.

    ``numerics="official"`` reproduces two bugs of the official code in the shifted branch: the rolled map
    is cut into consecutive raster runs of ``window**2`` tokens instead of windows (the shifted-window mask
    is still added), and the result is rolled back along the token and the **channel** axes of a
    ``(B, H*W, C)`` tensor; its mask adds ``-100`` (not ``-inf``), as the official code does
    (:class:`~gridattn.blocks.numerics.OfficialShiftedWindowAttention`, chosen when the block is built).
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
        check_numerics(numerics)
        self.dim, self.window_size, self.numerics = dim, window_size, numerics
        heads = num_heads // 2
        quarter = dict(in_dim=dim, qkv_bias=qkv_bias, backend=backend)
        self.window_attn = WindowAttention(dim // 4, heads, window_size, 0, **quarter)
        # official numerics: the official code's branch, bugs included (same weights), chosen here once
        shifted = OfficialShiftedWindowAttention if numerics == "official" else WindowAttention
        self.window_attn_s = shifted(dim // 4, heads, window_size, window_size // 2, **quarter)
        self.grid_attn = GridAttention(dim // 2, heads, interval, out_proj=False, bias_hidden_dim=grid_bias_dim,
                                       **quarter)
        self.fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = PostNorm(dim, Mlp(dim, int(dim * mlp_ratio)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim)
        branches = torch.cat([self.window_attn(x), self.window_attn_s(x), self.grid_attn(x)], dim=-1)
        x = x + self.norm1(self.fc(branches))
        return self.mlp(x)
