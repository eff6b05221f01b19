"""Residual wrappers with a LayerNorm before (pre-norm) or after (post-norm) the wrapped layer."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_last_dim, check_probability


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's branch with probability ``p`` and scale the rest by
    ``1 / (1 - p)``; the identity in eval.

    One draw per sample (the first dimension), so apply it to a residual branch, not to the sum.

    Args:
        p: drop probability, ``0 <= p < 1``.

    Shapes:
        any ``(B, ...)`` -> the same shape.

    Raises:
        ValueError: ``p`` outside ``[0, 1)``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        check_probability(p, "drop-path probability")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Residual(nn.Module):
    def __init__(self, dim: int, fn: nn.Module, drop_path: float = 0.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fn = fn
        self.drop_path = DropPath(drop_path)

    def _check(self, x: torch.Tensor) -> None:
        check_last_dim(x, self.dim, type(self).__name__, self.norm.weight)


class PreNorm(_Residual):
    """``x + drop_path(fn(LayerNorm(x)))`` (the Swin / ViT block layout).

    Args:
        dim: channels (last dimension) of ``x``.
        fn: the wrapped layer; must map ``(..., dim)`` to the same shape.
        drop_path: stochastic-depth probability of the branch.
        eps: LayerNorm epsilon.

    Shapes:
        ``(..., dim)`` -> ``(..., dim)``.

    Raises:
        ValueError: an input whose last dimension is not ``dim``, or that is not floating point.

    Examples:
        >>> import torch
        >>> from gridattn import GridAttention, PreNorm
        >>> block = PreNorm(64, GridAttention(dim=64, num_heads=4, interval=4), drop_path=0.1)
        >>> block(torch.randn(1, 16, 16, 64)).shape
        torch.Size([1, 16, 16, 64])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x + self.drop_path(self.fn(self.norm(x)))


class PostNorm(_Residual):
    """``x + drop_path(LayerNorm(fn(x)))`` (residual post-norm, as HMANet's GAB and Swin V2).

    Args:
        dim: channels (last dimension) of ``x``.
        fn: the wrapped layer; must map ``(..., dim)`` to the same shape.
        drop_path: stochastic-depth probability of the branch.
        eps: LayerNorm epsilon.

    Shapes:
        ``(..., dim)`` -> ``(..., dim)``.

    Raises:
        ValueError: an input whose last dimension is not ``dim``, or that is not floating point.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x + self.drop_path(self.norm(self.fn(x)))
