"""DAT's blocks: the dual aggregation transformer block (spatial or channel attention with the adaptive
interaction, then the spatial-gate MLP) and the residual group that alternates them."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..functional._checks import to_pair
from ..layers import AdaptiveInteraction, ChannelSelfAttention, PreNorm, RectangleWindowAttention, SpatialGateMlp
from .group import BlocksThenConv, block_rates
from .reconstruction import ResidualConv, residual_conv

DATAttention = Literal["spatial", "channel"]
"""The attention of a :class:`DATB`: rectangle windows (``"spatial"``) or channels (``"channel"``)."""


def dat_bias_width(dim: int) -> int:
    """Width of the spatial attention's position-bias MLP: DAT's ``dim // 2 // 4 // 4``, at least 1 (DAT-light's
    60 channels give 1, for which the bias MLP is a learned constant: LayerNorm of one value is 0)."""
    return max(1, dim // 32)


def dat_block_shifted(block: int, *, first_shifted: bool) -> bool:
    """Whether block ``block`` of a :class:`DATGroup` is a shifted spatial block: spatial blocks sit at even
    positions, and every other one is shifted, starting with the first when ``first_shifted``."""
    return block % 2 == 0 and (block // 2 + first_shifted) % 2 == 1


class DATB(nn.Module):
    """``x = x + interaction(attention)(LN(x)); x = x + SGFN(LN(x))``.

    ``attention="spatial"`` (DAT's DSTB): :class:`~gridattn.layers.RectangleWindowAttention` (dynamic position
    biases) whose output is gated per channel; ``"channel"`` (DCTB): :class:`~gridattn.layers.ChannelSelfAttention`
    gated per pixel. Both through :class:`~gridattn.layers.AdaptiveInteraction`, then
    :class:`~gridattn.layers.SpatialGateMlp`.

    Args:
        dim: channels.
        num_heads: attention heads (even for spatial attention).
        attention: ``"spatial"`` or ``"channel"``.
        window_size: ``(h, w)`` of the spatial attention's first orientation.
        shifted: the spatial attention's windows shifted by half their size.
        mlp_ratio: hidden width of the SGFN relative to ``dim`` (DAT's ``expansion_factor``).
        qkv_bias: bias in the query/key/value projections.
        drop_path: stochastic-depth probability of both branches.
        mask_value: score of masked pairs (``-inf``; the official DAT uses ``-100``).
        zero_padding_multiple: the official DAT's unmasked zero padding (its longer window side), or ``None``
            (padding masked).
        backend: attention backend, ``None`` for the default.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``, any height and width.

    Raises:
        ValueError: an unknown ``attention``, or any error of the layers.

    Examples:
        >>> import torch
        >>> from gridattn.blocks import DATB
        >>> pair = torch.nn.Sequential(DATB(48, num_heads=4, attention="spatial", window_size=(4, 8)),
        ...                            DATB(48, num_heads=4, attention="channel")).eval()
        >>> pair(torch.randn(1, 13, 21, 48)).shape
        torch.Size([1, 13, 21, 48])
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        attention: DATAttention,
        window_size: int | tuple[int, int] = (8, 32),
        shifted: bool = False,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        mask_value: float = float("-inf"),
        zero_padding_multiple: int | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if attention == "spatial":
            h, w = to_pair(window_size, "window_size")
            layer = RectangleWindowAttention(
                dim, num_heads, (h, w), (h // 2, w // 2) if shifted else 0, qkv_bias=qkv_bias,
                bias_hidden_dim=dat_bias_width(dim), mask_value=mask_value,
                zero_padding_multiple=zero_padding_multiple, backend=backend,
            )
            interaction = AdaptiveInteraction(layer, attention_gate="channel")
        elif attention == "channel":
            interaction = AdaptiveInteraction(ChannelSelfAttention(dim, num_heads, qkv_bias=qkv_bias),
                                              attention_gate="spatial")
        else:
            raise ValueError(f"attention must be 'spatial' or 'channel', got {attention!r}")
        self.dim = dim
        self.attn = PreNorm(dim, interaction, drop_path)
        self.ffn = PreNorm(dim, SpatialGateMlp(dim, int(dim * mlp_ratio)), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.attn(x))


class DATGroup(BlocksThenConv):
    """DAT's residual group: ``y = x + conv(blocks(x))`` with ``depth`` :class:`DATB` alternating spatial (even
    positions) and channel attention (odd); every other spatial block is shifted, starting with the first when
    ``first_shifted`` (DAT shifts from the first in odd-numbered groups, from the second in even-numbered ones).

    Args:
        dim: channels.
        depth: number of blocks.
        num_heads: attention heads (even).
        window_size: ``(h, w)`` of the spatial attention.
        first_shifted: whether the first spatial block is shifted.
        mlp_ratio: hidden width of the SGFNs relative to ``dim``.
        qkv_bias: bias in the query/key/value projections.
        drop_path: stochastic-depth probability of each block, a float or one value per block.
        mask_value: score of masked pairs (``-inf``; the official DAT uses ``-100``).
        zero_padding_multiple: the official DAT's unmasked zero padding, or ``None``.
        resi_connection: the closing convolution, see :func:`~gridattn.blocks.reconstruction.residual_conv`.
        backend: attention backend, ``None`` for the default.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``, any height and width.

    Raises:
        ValueError: ``depth`` below 1, a ``drop_path`` list of another length than ``depth``, or any error of
            :class:`DATB`.
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        num_heads: int,
        window_size: int | tuple[int, int] = (8, 32),
        first_shifted: bool = False,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path: float | list[float] = 0.0,
        mask_value: float = float("-inf"),
        zero_padding_multiple: int | None = None,
        resi_connection: ResidualConv = "1conv",
        backend: str | None = None,
    ) -> None:
        super().__init__()
        rates = block_rates(drop_path, depth)
        self.dim = dim
        self.blocks = nn.ModuleList(
            DATB(dim, num_heads=num_heads, attention="channel" if i % 2 else "spatial", window_size=window_size,
                 shifted=dat_block_shifted(i, first_shifted=first_shifted), mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                 drop_path=rate, mask_value=mask_value, zero_padding_multiple=zero_padding_multiple, backend=backend)
            for i, rate in enumerate(rates)
        )
        self.conv = residual_conv(dim, resi_connection)
