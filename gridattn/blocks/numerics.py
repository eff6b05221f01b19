"""HMANet's two numerics modes in one place: the names, the masked score of each, and the official code's
shifted-window branch (bugs included) as a :class:`~gridattn.WindowAttention` subclass that GAB chooses when
it is built.
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange

from ..functional.backends import bias_for_kernel
from ..functional.masks import window_attention_mask
from ..functional.partition import window_reverse
from ..layers.window_attention import WindowAttention, masked_window_attention

Numerics = Literal["corrected", "official"]
"""The numerics mode of :class:`~gridattn.blocks.GAB`, :class:`~gridattn.blocks.RHTB` and
:class:`~gridattn.models.HMANet`."""
NUMERICS: tuple[Numerics, ...] = ("corrected", "official")
"""The numerics modes."""
OFFICIAL_MASK_VALUE = -100.0
"""What the official code adds to masked scores (Swin's convention); used in ``"official"`` numerics."""


def check_numerics(numerics: str) -> None:
    """Raise ``ValueError`` for a numerics mode other than ``"corrected"`` and ``"official"``."""
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be 'corrected' or 'official', got {numerics!r}")


def mask_value(numerics: Numerics) -> float:
    """The score added to masked pairs: ``-inf`` (exact) in corrected numerics, ``-100`` in official."""
    check_numerics(numerics)
    return OFFICIAL_MASK_VALUE if numerics == "official" else float("-inf")


class OfficialShiftedWindowAttention(WindowAttention):
    """The official HMANet code's shifted-window branch of GAB, both bugs reproduced.

    The rolled map is cut into consecutive raster runs of ``window**2`` tokens instead of windows (the
    shifted-window mask is still added, with ``-100``), and the result is rolled back along the token and the
    **channel** axes of a ``(B, H*W, C)`` tensor. Same parameters (and state-dict keys) as the
    :class:`~gridattn.WindowAttention` it replaces; square windows and shifts only, and H, W multiples of the
    window (HMANet pads to that).

    Shapes:
        ``(B, H, W, in_dim)`` -> ``(B, H, W, dim)``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, **kwargs) -> None:
        super().__init__(dim, num_heads, window_size, shift, mask_value=OFFICIAL_MASK_VALUE, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        window, shift = self.window_size[0], self.shift[0]
        if height % window or width % window:
            raise ValueError(f"official numerics need H, W multiples of {window}, got {height}x{width}")
        qkv = torch.roll(self.qkv(x), shifts=(-shift, -shift), dims=(1, 2))
        # raster runs of window**2 tokens, not windows: the first bug
        q, k, v = rearrange(qkv, "b h w (three heads d) -> three b (h w) heads d", three=3, heads=self.num_heads)
        q, k, v = (rearrange(t, "b (n t) heads d -> b n heads t d", t=window * window) for t in (q, k, v))
        bias = bias_for_kernel(self.relative_position_bias(self.window_size), q)  # before the mask broadcasts it
        mask = window_attention_mask(height, width, window, shift, device=x.device, dtype=bias.dtype,
                                     masked_value=self.mask_value)
        out = masked_window_attention(q, k, v, bias, mask, max_scores=self.max_scores, backend=self.backend)
        out = self.proj(rearrange(out, "b n heads t d -> (b n) t (heads d)"))
        out = window_reverse(out.reshape(-1, window, window, self.dim), window, height, width)
        # the roll back acts on a (B, H*W, C) tensor: tokens and channels are rolled, the second bug
        out = torch.roll(out.reshape(batch, height * width, self.dim), shifts=(shift, shift), dims=(1, 2))
        return out.reshape(batch, height, width, self.dim)
