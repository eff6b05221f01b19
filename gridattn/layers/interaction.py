"""DAT's adaptive interaction: an attention layer beside a depthwise-convolution branch, each gating the other."""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import nn

from ..functional._checks import check_feature_map

AttentionGate = Literal["channel", "spatial"]
"""Which of :class:`AdaptiveInteraction`'s gates scales the attention output."""


class AttendingLayer(Protocol):
    """What :class:`AdaptiveInteraction` needs of the attention it wraps (``RectangleWindowAttention``,
    ``ChannelSelfAttention``)."""

    dim: int

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def project_out(self, x: torch.Tensor) -> torch.Tensor: ...


class AdaptiveInteraction(nn.Module):
    """``project_out(attended * gate_a(conv) + conv * gate_c(attended))`` around an attention layer.

    The convolution branch is ``GELU(BN(depthwise3x3(values)))`` on the attention's own values. Two gates mix
    the branches, each computed from one and applied to the other, so that each branch gets what it lacks:

    * ``attention_gate="channel"`` (for window attention, which mixes pixels): the attention output is scaled
      per channel by ``sigmoid(channel_gate(conv))``, and the convolution per pixel by
      ``sigmoid(spatial_gate(attended))``;
    * ``"spatial"`` (for channel attention, which mixes channels): the attention output is scaled per pixel by
      ``sigmoid(spatial_gate(conv))``, the convolution per channel by ``sigmoid(channel_gate(attended))``.

    The channel gate is global average pooling, 1x1 convolutions ``dim -> dim // 8 -> dim`` with BN and GELU
    between; the spatial gate 1x1 convolutions ``dim -> dim // 16 -> 1`` with BN and GELU between.

    Args:
        attention: the wrapped layer (``attend(x) -> (attended, values)``, ``project_out``, ``dim``).
        attention_gate: which gate scales the attention output.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.

    Raises:
        ValueError: ``dim`` below 16 (the spatial gate's hidden width would be 0), an unknown ``attention_gate``;
            an input that is not a 4-D map with ``dim`` channels; in training, a batch of one (the channel gate's
            BatchNorm normalises over the batch).

    Examples:
        >>> import torch
        >>> from gridattn import AdaptiveInteraction, ChannelSelfAttention
        >>> layer = AdaptiveInteraction(ChannelSelfAttention(dim=32, num_heads=4), attention_gate="spatial")
        >>> layer(torch.randn(2, 9, 14, 32)).shape
        torch.Size([2, 9, 14, 32])
    """

    def __init__(self, attention: AttendingLayer, *, attention_gate: AttentionGate) -> None:
        super().__init__()
        dim = attention.dim
        if dim < 16:
            raise ValueError(f"AdaptiveInteraction needs at least 16 channels (its spatial gate is dim // 16 wide), "
                             f"got {dim}")
        if attention_gate not in ("channel", "spatial"):
            raise ValueError(f"attention_gate must be 'channel' or 'spatial', got {attention_gate!r}")
        self.dim, self.attention_gate = dim, attention_gate
        self.attention = attention
        self.dwconv = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.BatchNorm2d(dim), nn.GELU())
        self.channel_interaction = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim // 8, 1), nn.BatchNorm2d(dim // 8), nn.GELU(),
            nn.Conv2d(dim // 8, dim, 1),
        )
        self.spatial_interaction = nn.Sequential(
            nn.Conv2d(dim, dim // 16, 1), nn.BatchNorm2d(dim // 16), nn.GELU(), nn.Conv2d(dim // 16, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim)
        if self.training and x.shape[0] < 2:  # the channel gate's BatchNorm sees one value per channel
            raise ValueError("AdaptiveInteraction trains on batches of 2 or more: its channel gate batch-normalises "
                             f"one pooled value per image and channel, got a batch of {x.shape[0]}")
        attended, values = self.attention.attend(x)  # (B, H, W, dim) each
        conv = self.dwconv(values.permute(0, 3, 1, 2))  # convolutions want (B, C, H, W)
        attended_cf = attended.permute(0, 3, 1, 2)
        if self.attention_gate == "channel":
            attended_gate = self.channel_interaction(conv)  # (B, C, 1, 1)
            conv_gate = self.spatial_interaction(attended_cf)  # (B, 1, H, W)
        else:
            attended_gate = self.spatial_interaction(conv)
            conv_gate = self.channel_interaction(attended_cf)
        mixed = attended * torch.sigmoid(attended_gate).permute(0, 2, 3, 1)
        mixed = mixed + (conv * torch.sigmoid(conv_gate)).permute(0, 2, 3, 1)
        return self.attention.project_out(mixed)

    def extra_repr(self) -> str:
        return f"attention_gate={self.attention_gate!r}"
