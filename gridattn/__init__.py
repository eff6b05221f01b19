"""gridattn: attention components for vision, and the SR transformers built from them (HMANet, SwinIR, HAT, DAT).

Layers take and return channels-last feature maps ``(B, H, W, C)`` of any height and width.
"""

from . import blocks, functional, models
from ._errors import InputError
from ._version import __version__ as __version__
from .functional import attention, available_backends, set_default_backend, use_backend
from .layers import (
    AdaptiveInteraction,
    ChannelAttention,
    ChannelSelfAttention,
    ContinuousPositionBias,
    ConvChannelAttention,
    DropPath,
    DynamicPositionBias,
    FusedConv,
    GridAttention,
    Mlp,
    OverlappingCrossAttention,
    PositionBias,
    PostNorm,
    PreNorm,
    RectangleWindowAttention,
    RelativePositionBias,
    SpatialGateMlp,
    WindowAttention,
    bias_cache,
    set_bias_cache,
)

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
    "InputError",
    "Mlp",
    "OverlappingCrossAttention",
    "PositionBias",
    "PostNorm",
    "PreNorm",
    "RectangleWindowAttention",
    "RelativePositionBias",
    "SpatialGateMlp",
    "WindowAttention",
    "attention",
    "available_backends",
    "bias_cache",
    "blocks",
    "use_backend",
    "functional",
    "models",
    "set_bias_cache",
    "set_default_backend",
]
