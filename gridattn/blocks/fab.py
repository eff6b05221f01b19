"""FAB: HMANet's fused attention block, a Swin transformer block (pre-norm W-MSA or SW-MSA, then MLP)."""

from __future__ import annotations

import torch
from torch import nn

from ..layers import Mlp, PreNorm, WindowAttention


class FAB(nn.Module):
    """``x = x + attn(LN(x)); x = x + mlp(LN(x))`` with window attention (shifted when ``shift > 0``).

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: attention window.
        shift: cyclic shift of SW-MSA (0 for W-MSA; HMANet alternates 0 and ``window_size // 2``).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias: bias in the query/key/value projection.
        drop_path: stochastic-depth probability of both branches.
        mask_value: score of masked pairs in SW-MSA (``-inf``; the official HMANet uses ``-100``).
        backend: attention backend, ``None`` for the default.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``, any height and width.

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``, a shift outside ``[0, window_size)``; an input that
            is not a 4-D map with ``dim`` channels.

    Examples:
        >>> import torch
        >>> from gridattn.blocks import FAB
        >>> pair = torch.nn.Sequential(
        ...     FAB(60, num_heads=6, window_size=8), FAB(60, num_heads=6, window_size=8, shift=4)
        ... )
        >>> pair(torch.randn(1, 24, 24, 60)).shape
        torch.Size([1, 24, 24, 60])
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        window_size: int,
        shift: int = 0,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        mask_value: float = float("-inf"),
        backend: str | None = None,
    ) -> None:
        super().__init__()
        attention = WindowAttention(dim, num_heads, window_size, shift, qkv_bias=qkv_bias, mask_value=mask_value,
                                    backend=backend)
        self.attn = PreNorm(dim, attention, drop_path)
        self.mlp = PreNorm(dim, Mlp(dim, int(dim * mlp_ratio)), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))
