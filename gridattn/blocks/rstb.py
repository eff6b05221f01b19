"""RSTB: SwinIR's residual Swin transformer block (a stack of Swin blocks, a convolution, a long skip)."""

from __future__ import annotations

from torch import nn

from .fab import FAB
from .group import BlocksThenConv, block_rates
from .reconstruction import ResidualConv, residual_conv


class RSTB(BlocksThenConv):
    """``y = x + conv(blocks(x))``: ``depth`` Swin blocks (:class:`FAB`, W-MSA when even, SW-MSA shifted by
    ``window_size // 2`` when odd), then :func:`~gridattn.blocks.reconstruction.residual_conv`.

    Args:
        dim: channels.
        depth: number of Swin blocks.
        num_heads: attention heads.
        window_size: attention window.
        mlp_ratio: hidden width of the MLPs relative to ``dim``.
        qkv_bias: bias in the query/key/value projections.
        drop_path: stochastic-depth probability of each block, a float or one value per block.
        mask_value: score of masked pairs (``-inf``; the official SwinIR uses ``-100``).
        resi_connection: the closing convolution, see :func:`~gridattn.blocks.reconstruction.residual_conv`.
        backend: attention backend, ``None`` for the default.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``, any height and width.

    Raises:
        ValueError: ``depth`` below 1, a ``drop_path`` list of another length than ``depth``, or any error of
            :class:`FAB`.

    Examples:
        >>> import torch
        >>> from gridattn.blocks import RSTB
        >>> RSTB(48, depth=2, num_heads=4, window_size=8)(torch.randn(1, 13, 21, 48)).shape
        torch.Size([1, 13, 21, 48])
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path: float | list[float] = 0.0,
        mask_value: float = float("-inf"),
        resi_connection: ResidualConv = "1conv",
        backend: str | None = None,
    ) -> None:
        super().__init__()
        rates = block_rates(drop_path, depth)
        self.dim = dim
        self.blocks = nn.ModuleList(
            FAB(dim, num_heads=num_heads, window_size=window_size, shift=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rate, mask_value=mask_value, backend=backend)
            for i, rate in enumerate(rates)
        )
        self.conv = residual_conv(dim, resi_connection)
