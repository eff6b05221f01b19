"""HMANet's fused convolution block (the convolutional part of its FAB stack)."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_feature_map, check_positive
from .channel_attention import ChannelAttention


class FusedConv(nn.Module):
    """Fused-MBConv-style block with squeeze-excitation, residual included.

    ``x + project(SE(GELU(LN(conv3x3(LN(x))))))``: the 3x3 convolution expands ``dim`` to
    ``dim * expand_ratio`` channels, the SE gate (SiLU, hidden ``expanded // se_reduction``) reweights
    them, and a 1x1 projection (a ``Linear`` on channels-last maps) returns to ``dim``. HMANet uses
    ``expand_ratio=6, se_reduction=2`` (180 -> 1080 -> 180, SE hidden 540).

    Args:
        dim: channels.
        expand_ratio: channel expansion of the 3x3 convolution.
        se_reduction: squeeze ratio of the SE gate.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.

    Raises:
        ValueError: ``dim`` or ``expand_ratio`` below 1; an input that is not a 4-D map with ``dim`` channels.

    Examples:
        >>> import torch
        >>> from gridattn import FusedConv
        >>> block = FusedConv(dim=48)                      # 48 -> 288 -> 48, residual included
        >>> block(torch.randn(1, 20, 20, 48)).shape
        torch.Size([1, 20, 20, 48])
    """

    def __init__(self, dim: int, expand_ratio: int = 6, se_reduction: int = 2) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(expand_ratio, "expand_ratio")
        self.dim = dim
        hidden = dim * expand_ratio
        self.norm = nn.LayerNorm(dim)
        self.expand = nn.Conv2d(dim, hidden, 3, padding=1)
        self.expand_norm = nn.LayerNorm(hidden)
        self.act = nn.GELU()
        self.se = ChannelAttention(hidden, se_reduction, act_layer=nn.SiLU)
        self.project = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim, weight=self.expand.weight)
        # a permuted (B, H, W, C) tensor is a channels-last NCHW one: no copies around the convolution
        y = self.expand(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.project(self.se(self.act(self.expand_norm(y))))
