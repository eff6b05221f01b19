"""The transformer feed-forward network."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_last_dim, check_positive


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
