"""What the residual groups (RHTB, RSTB, RHAG, DATGroup) share: per-block stochastic-depth rates, the closing
``x + conv(y)`` on channels-last maps, and the plain group of blocks that ends with it."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_feature_map, check_positive


def block_rates(drop_path: float | list[float], depth: int) -> list[float]:
    """The stochastic-depth rate of each of ``depth`` blocks: one float for all, or one value per block.

    Raises:
        ValueError: ``depth`` below 1, or a list of another length than ``depth``.
    """
    check_positive(depth, "depth")
    rates = [drop_path] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
    if len(rates) != depth:
        raise ValueError(f"drop_path has {len(rates)} values for depth {depth}")
    return rates


def conv_residual(x: torch.Tensor, y: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """``x + conv(y)`` for channels-last ``(B, H, W, C)`` maps (the convolution wants ``(B, C, H, W)``)."""
    return x + conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class BlocksThenConv(nn.Module):
    """``y = x + conv(blocks(x))``: the forward of a residual group that is only its blocks and the closing
    convolution (SwinIR's RSTB, DAT's group). A subclass sets ``dim``, ``blocks`` and ``conv``.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.
    """

    dim: int
    blocks: nn.ModuleList
    conv: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim)
        y = x
        for block in self.blocks:
            y = block(y)
        return conv_residual(x, y, self.conv)
