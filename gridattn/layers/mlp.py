"""The transformer feed-forward networks: the MLP, and DAT's spatial-gate variant."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_feature_map, check_last_dim, check_positive


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` followed by dropout, applied to the last dimension.

    Args:
        dim: input channels.
        hidden_dim: hidden channels (HMANet: ``2 * dim``).
        out_dim: output channels, default ``dim``.
        act_layer: activation class, default exact-erf ``nn.GELU``.
        drop: dropout after the activation and after ``fc2``.

    Shapes:
        ``(..., dim)`` -> ``(..., out_dim)``; on ``(B, H, W, C)`` maps it is a per-pixel MLP.

    Raises:
        ValueError: a width below 1; an input whose last dimension is not ``dim``.

    Examples:
        >>> import torch
        >>> from gridattn import Mlp
        >>> Mlp(dim=64, hidden_dim=128)(torch.randn(2, 8, 8, 64)).shape
        torch.Size([2, 8, 8, 64])
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        out_dim: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        for value, name in ((dim, "dim"), (hidden_dim, "hidden_dim"), (out_dim, "out_dim")):
            check_positive(value, name)
        self.dim = dim
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim(x, self.dim, "Mlp", self.fc1.weight)
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SpatialGateMlp(nn.Module):
    """DAT's spatial-gate feed-forward network (SGFN): the hidden channels' first half is gated by a depthwise
    convolution of the second half.

    ``h = act(fc1(x))``, ``h1, h2 = halves(h)``, ``y = fc2(h1 * dwconv3x3(LayerNorm(h2)))``; the gate mixes
    each pixel with its 3x3 neighbours (zero beyond the map), the only spatial mixing of the network.

    Args:
        dim: input channels.
        hidden_dim: hidden channels, even (DAT: ``2 * dim`` or ``4 * dim``); ``fc2`` takes half of them.
        out_dim: output channels, default ``dim``.
        act_layer: activation class, default exact-erf ``nn.GELU``.
        drop: dropout after the activation, the gate and ``fc2``.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, out_dim)``.

    Raises:
        ValueError: a width below 1, an odd ``hidden_dim``; an input that is not a 4-D map with ``dim`` channels.

    Examples:
        >>> import torch
        >>> from gridattn import SpatialGateMlp
        >>> SpatialGateMlp(dim=60, hidden_dim=120)(torch.randn(2, 13, 21, 60)).shape
        torch.Size([2, 13, 21, 60])
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        out_dim: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        for value, name in ((dim, "dim"), (hidden_dim, "hidden_dim"), (out_dim, "out_dim")):
            check_positive(value, name)
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (half gates the other half), got {hidden_dim}")
        self.dim, gate = dim, hidden_dim // 2
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.norm = nn.LayerNorm(gate)
        self.conv = nn.Conv2d(gate, gate, 3, padding=1, groups=gate)
        self.fc2 = nn.Linear(gate, out_dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim, weight=self.fc1.weight)
        kept, gate = self.drop(self.act(self.fc1(x))).chunk(2, dim=-1)
        gate = self.conv(self.norm(gate).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # the conv wants (B, C, H, W)
        return self.drop(self.fc2(self.drop(kept * gate)))
