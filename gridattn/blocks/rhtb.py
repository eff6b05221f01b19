"""RHTB: HMANet's residual hybrid transformer block (FusedConv + FAB stack, GAB, conv, long skip)."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_feature_map
from ..layers import FusedConv
from .fab import FAB
from .gab import GAB
from .group import block_rates, conv_residual
from .numerics import Numerics, mask_value
from .reconstruction import ResidualConv, residual_conv


class RHTB(nn.Module):
    """``y = x + conv3x3(group(x))`` where ``group`` is HMANet's attention group.

    The group runs ``blocks`` — for each ``i < depth``: a :class:`FusedConv` and a W-MSA :class:`FAB` when
    ``i`` is even, an SW-MSA FAB when odd (nine modules for depth 6) — then the :class:`GAB`, added as
    ``x + gab(x) * scale`` with a learned per-channel ``scale``. GAB's output already contains its input, so
    its input is counted twice: a harmless re-parameterisation kept from the official model.

    ``numerics="official"`` also makes the FABs add ``-100`` to masked scores (as the official code) instead
    of ``-inf``.

    Args:
        dim: channels; divisible by 4.
        depth: number of FAB blocks.
        num_heads: heads of every FAB and of the GAB (even).
        window_size: window of the FABs and of GAB's window branches; odd FABs shift by ``window_size // 2``.
        interval: interval of GAB's grid branch.
        mlp_ratio: hidden width of the MLPs relative to ``dim``.
        qkv_bias: bias in the query/key/value projections.
        drop_path: stochastic-depth probability of each FAB, a float or one value per FAB.
        numerics: ``"corrected"`` or ``"official"`` (see :class:`GAB`).
        grid_bias_dim: width of the grid branch's position-bias MLPs (``None``: GridAttention's default).
        backend: attention backend, ``None`` for the default.
        resi_connection: the closing convolution, see :func:`~gridattn.blocks.reconstruction.residual_conv`.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.

    Raises:
        ValueError: ``depth`` below 1, a ``drop_path`` list of another length than ``depth``, or any error
            of :class:`GAB` / :class:`FAB`.

    Examples:
        >>> import torch
        >>> from gridattn.blocks import RHTB
        >>> block = RHTB(dim=48, depth=2, num_heads=4, window_size=8, interval=4)
        >>> len(block.blocks)                              # FusedConv, FAB(shift 0), FAB(shift 4)
        3
        >>> block(torch.randn(1, 16, 16, 48)).shape
        torch.Size([1, 16, 16, 48])
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        num_heads: int,
        window_size: int,
        interval: int,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path: float | list[float] = 0.0,
        numerics: Numerics = "corrected",
        grid_bias_dim: int | None = None,
        backend: str | None = None,
        resi_connection: ResidualConv = "1conv",
    ) -> None:
        super().__init__()
        rates = block_rates(drop_path, depth)
        self.dim = dim
        masked = mask_value(numerics)
        blocks: list[nn.Module] = []
        for i, rate in enumerate(rates):
            if i % 2 == 0:
                blocks.append(FusedConv(dim, expand_ratio=6, se_reduction=2))
            shift = 0 if i % 2 == 0 else window_size // 2
            blocks.append(FAB(dim, num_heads=num_heads, window_size=window_size, shift=shift, mlp_ratio=mlp_ratio,
                              qkv_bias=qkv_bias, drop_path=rate, mask_value=masked, backend=backend))
        self.blocks = nn.ModuleList(blocks)
        self.gab = GAB(dim, num_heads=num_heads, window_size=window_size, interval=interval, mlp_ratio=mlp_ratio,
                       qkv_bias=qkv_bias, numerics=numerics, grid_bias_dim=grid_bias_dim, backend=backend)
        self.scale = nn.Parameter(torch.empty(dim))
        nn.init.trunc_normal_(self.scale, std=0.02)
        self.conv = residual_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim)
        y = x
        for block in self.blocks:
            y = block(y)
        y = y + self.gab(y) * self.scale
        return conv_residual(x, y, self.conv)
