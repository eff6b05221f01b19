"""Drop-in layers: channels-last ``(B, H, W, C)`` in and out, any height and width."""

from .caching import bias_cache, set_bias_cache
from .channel_attention import ChannelAttention, ConvChannelAttention
from .channel_self_attention import ChannelSelfAttention
from .fused_conv import FusedConv
from .grid_attention import GridAttention
from .interaction import AdaptiveInteraction
from .mlp import Mlp, SpatialGateMlp
from .options import set_attention_options
from .overlapping_attention import OverlappingCrossAttention
from .position import ContinuousPositionBias, DynamicPositionBias, PositionBias, RelativePositionBias
from .rectangle_window_attention import RectangleWindowAttention
from .residual import DropPath, PostNorm, PreNorm
from .window_attention import WindowAttention, window_self_attention

__all__ = [
    "AdaptiveInteraction",
    "ChannelAttention",
    "ChannelSelfAttention",
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
    "RectangleWindowAttention",
    "RelativePositionBias",
    "SpatialGateMlp",
    "WindowAttention",
    "bias_cache",
    "set_attention_options",
    "set_bias_cache",
    "window_self_attention",
]
