"""Drop-in layers: channels-last ``(B, H, W, C)`` in and out, any height and width."""

from .caching import bias_cache, set_bias_cache
from .channel_attention import ChannelAttention, ConvChannelAttention
from .fused_conv import FusedConv
from .grid_attention import GridAttention
from .mlp import Mlp
from .options import set_attention_options
from .overlapping_attention import OverlappingCrossAttention
from .position import ContinuousPositionBias, DynamicPositionBias, PositionBias, RelativePositionBias
from .residual import DropPath, PostNorm, PreNorm
from .window_attention import WindowAttention

__all__ = [
    "ChannelAttention",
    "ContinuousPositionBias",
    "ConvChannelAttention",
    "DropPath",
    "DynamicPositionBias",
    "FusedConv",
    "GridAttention",
    "Mlp",
    "OverlappingCrossAttention",
    "PositionBias",
    "PostNorm",
    "PreNorm",
    "RelativePositionBias",
    "WindowAttention",
    "bias_cache",
    "set_attention_options",
    "set_bias_cache",
]
