"""HAT's blocks: HAB (window attention and a channel-attention convolution in parallel, then an MLP), OCAB
(overlapping cross-attention, then an MLP) and RHAG (HABs, an OCAB, a convolution, a long skip)."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_feature_map
from ..layers import ConvChannelAttention, DropPath, Mlp, OverlappingCrossAttention, PreNorm, WindowAttention
from .group import block_rates, conv_residual
from .reconstruction import ResidualConv, residual_conv


class HAB(nn.Module):
    """HAT's hybrid attention block: ``y = LN(x); x = x + attn(y) + conv_scale * cab(y); x = x + mlp(LN(x))``.

    ``attn`` is window attention (shifted when ``shift > 0``), ``cab`` a
    :class:`~gridattn.layers.ConvChannelAttention` branch on the same normalised input.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: attention window.
        shift: cyclic shift of SW-MSA (HAT alternates 0 and ``window_size // 2``).
        compress_ratio: channel compression of the CAB's first convolution.
        squeeze_factor: squeeze ratio of the CAB's channel attention.
        conv_scale: weight of the CAB branch.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias: bias in the query/key/value projection.
        drop_path: stochastic-depth probability of the attention and MLP branches.
        mask_value: score of masked pairs (``-inf``; the official HAT uses ``-100``).
        backend: attention backend, ``None`` for the default.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``, any height and width.

    Examples:
        >>> import torch
        >>> from gridattn.blocks import HAB
        >>> HAB(48, num_heads=4, window_size=8, shift=4, compress_ratio=3, squeeze_factor=16)(
        ...     torch.randn(1, 13, 21, 48)).shape
        torch.Size([1, 13, 21, 48])
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int, shift: int = 0, compress_ratio: int = 3,
                 squeeze_factor: int = 30, conv_scale: float = 0.01, mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, mask_value: float = float("-inf"), backend: str | None = None) -> None:
        super().__init__()
        self.dim, self.conv_scale = dim, conv_scale
        self.norm = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, shift, qkv_bias=qkv_bias, mask_value=mask_value,
                                    backend=backend)
        self.conv_block = ConvChannelAttention(dim, compress_ratio, squeeze_factor)
        self.drop_path = DropPath(drop_path)
        self.mlp = PreNorm(dim, Mlp(dim, int(dim * mlp_ratio)), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim)
        y = self.norm(x)
        x = x + self.drop_path(self.attn(y)) + self.conv_block(y) * self.conv_scale
        return self.mlp(x)


class OCAB(nn.Module):
    """HAT's overlapping cross-attention block: ``x = x + oca(LN(x)); x = x + mlp(LN(x))`` with
    :class:`~gridattn.layers.OverlappingCrossAttention`.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: query window.
        overlap_ratio: key/value windows are ``window_size + int(overlap_ratio * window_size)`` wide.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias: bias in the query/key/value projection.
        official_padding: attend the zero keys beyond the map as the official code does, instead of masking them.
        backend: attention backend, ``None`` for the default.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``, any height and width.
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int, overlap_ratio: float = 0.5,
                 mlp_ratio: float = 2.0, qkv_bias: bool = True, official_padding: bool = False,
                 backend: str | None = None) -> None:
        super().__init__()
        attention = OverlappingCrossAttention(dim, num_heads, window_size, overlap_ratio=overlap_ratio,
                                              qkv_bias=qkv_bias, official_padding=official_padding, backend=backend)
        self.attn = PreNorm(dim, attention)
        self.mlp = PreNorm(dim, Mlp(dim, int(dim * mlp_ratio)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))


class RHAG(nn.Module):
    """HAT's residual hybrid attention group: ``y = x + conv(ocab(habs(x)))``; HABs alternate W-MSA and SW-MSA.

    Args:
        dim: channels.
        depth: number of HABs.
        num_heads: attention heads of the HABs and the OCAB.
        window_size: attention window.
        overlap_ratio: the OCAB's overlap.
        compress_ratio: the HABs' CAB compression.
        squeeze_factor: the HABs' CAB squeeze ratio.
        conv_scale: weight of the HABs' CAB branch.
        mlp_ratio: hidden width of the MLPs relative to ``dim``.
        qkv_bias: bias in the query/key/value projections.
        drop_path: stochastic-depth probability of each HAB, a float or one value per HAB.
        mask_value: score of masked pairs in SW-MSA (``-inf``; official ``-100``).
        official_padding: the OCAB attends the zero keys beyond the map (official) instead of masking them.
        resi_connection: the closing convolution, see :func:`~gridattn.blocks.reconstruction.residual_conv`.
        backend: attention backend, ``None`` for the default.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.

    Examples:
        >>> import torch
        >>> from gridattn.blocks import RHAG
        >>> RHAG(48, depth=2, num_heads=4, window_size=8, squeeze_factor=16)(torch.randn(1, 13, 21, 48)).shape
        torch.Size([1, 13, 21, 48])
    """

    def __init__(self, dim: int, *, depth: int, num_heads: int, window_size: int, overlap_ratio: float = 0.5,
                 compress_ratio: int = 3, squeeze_factor: int = 30, conv_scale: float = 0.01, mlp_ratio: float = 2.0,
                 qkv_bias: bool = True, drop_path: float | list[float] = 0.0, mask_value: float = float("-inf"),
                 official_padding: bool = False, resi_connection: ResidualConv = "1conv",
                 backend: str | None = None) -> None:
        super().__init__()
        rates = block_rates(drop_path, depth)
        self.dim = dim
        self.blocks = nn.ModuleList(
            HAB(dim, num_heads=num_heads, window_size=window_size, shift=0 if i % 2 == 0 else window_size // 2,
                compress_ratio=compress_ratio, squeeze_factor=squeeze_factor, conv_scale=conv_scale,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rate, mask_value=mask_value, backend=backend)
            for i, rate in enumerate(rates)
        )
        self.overlap_attn = OCAB(dim, num_heads=num_heads, window_size=window_size, overlap_ratio=overlap_ratio,
                                 mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, official_padding=official_padding,
                                 backend=backend)
        self.conv = residual_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim)
        y = x
        for block in self.blocks:
            y = block(y)
        y = self.overlap_attn(y)
        return conv_residual(x, y, self.conv)
