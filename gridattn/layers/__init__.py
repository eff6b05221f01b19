"""Drop-in layers: channels-last ``(B, H, W, C)`` in and out, any height and width."""

from .channel_attention import ChannelAttention, ConvChannelAttention
from .fused_conv import FusedConv
from .grid_attention import GridAttention
from .mlp import Mlp
from .position import DynamicPositionBias, RelativePositionBias
from .residual import DropPath, PostNorm, PreNorm
from .window_attention import WindowAttention

__all__ = [
    "ChannelAttention",
    "ConvChannelAttention",
    "DropPath",
    "DynamicPositionBias",
    "FusedConv",
    "GridAttention",
    "Mlp",
    "PostNorm",
    "PreNorm",
    "RelativePositionBias",
    "WindowAttention",
]
