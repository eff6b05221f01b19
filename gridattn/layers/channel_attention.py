"""Channel attention: squeeze-excitation, and the conv + channel-attention block of RCAN / HAT."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_feature_map, check_positive


class ChannelAttention(nn.Module):
    """Squeeze-excitation on channels-last maps: ``x * sigmoid(fc2(act(fc1(mean_HW(x)))))``.

    Args:
        dim: channels.
        reduction: hidden width is ``dim // reduction`` (at least 1). RCAN/HAT use 16 or 30 with ReLU;
            HMANet's FusedConv uses 2 with SiLU.
        act_layer: activation class between the two projections.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.

    Raises:
        ValueError: ``dim`` or ``reduction`` below 1; an input that is not a 4-D map with ``dim`` channels.

    Examples:
        >>> import torch
        >>> from gridattn import ChannelAttention
        >>> se = ChannelAttention(dim=64, reduction=16)
        >>> se(torch.randn(2, 9, 11, 64)).shape
        torch.Size([2, 9, 11, 64])
    """

    def __init__(self, dim: int, reduction: int = 16, act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(reduction, "reduction")
        self.dim = dim
        hidden = max(1, dim // reduction)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim, weight=self.fc1.weight)
        squeezed = x.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(squeezed))))


class ConvChannelAttention(nn.Module):
    """RCAN / HAT's channel-attention block (CAB): ``CA(conv3x3(GELU(conv3x3(x))))``.

    The first convolution compresses to ``dim // compress_ratio`` channels, the second restores ``dim``.
    Returns the branch only (no residual); wrap it or add it yourself.

    Args:
        dim: channels.
        compress_ratio: channel compression of the first convolution (HAT: 3).
        reduction: squeeze ratio of the channel attention (HAT: 30).

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.

    Raises:
        ValueError: ``dim`` or ``compress_ratio`` below 1; an input that is not a 4-D map with ``dim`` channels.

    Examples:
        >>> import torch
        >>> from gridattn import ConvChannelAttention
        >>> cab = ConvChannelAttention(dim=60)
        >>> x = torch.randn(1, 16, 16, 60)
        >>> (x + cab(x)).shape                             # add the residual yourself
        torch.Size([1, 16, 16, 60])
    """

    def __init__(self, dim: int, compress_ratio: int = 3, reduction: int = 30) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(compress_ratio, "compress_ratio")
        self.dim = dim
        hidden = max(1, dim // compress_ratio)
        self.conv1 = nn.Conv2d(dim, hidden, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, dim, 3, padding=1)
        self.channel_attention = ChannelAttention(dim, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.dim, weight=self.conv1.weight)
        y = self.conv2(self.act(self.conv1(x.permute(0, 3, 1, 2))))  # convolutions want (B, C, H, W)
        return self.channel_attention(y.permute(0, 2, 3, 1))
