"""HMANet (Hybrid Multi-Axis Aggregation Network, arXiv 2405.05001) built from gridattn's blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..blocks import RHTB
from ..blocks.numerics import Numerics
from .config import DIV2K_RGB_MEAN as DIV2K_RGB_MEAN
from .sr import SRConfig, SRTransformer

SCALES = (2, 3, 4)
"""Upscaling factors HMANet's pixel-shuffle upsampler supports."""
CONFIG_VERSION = 2
"""Version of :meth:`~gridattn.models.ModelConfig.to_dict`'s encoding of an HMANet: 2 adds ``"arch"`` (and the
reconstruction's module names); dicts without ``"version"`` (gridattn 0.1) read as 0."""


@dataclass(frozen=True)
class HMANetConfig(SRConfig):
    """Hyper-parameters of an HMANet. The defaults are the official x4 model.

    The fields of :class:`~gridattn.models.sr.SRConfig` (``scale`` 2, 3 or 4, ``upsampler`` ``"pixelshuffle"``,
    ``window_size`` 16 by default), and:

    Attributes:
        interval: interval of the grid attention.
        grid_bias_dim: width of the grid attention's position-bias MLPs; ``None`` for
            :class:`~gridattn.GridAttention`'s default (the official value for ``embed_dim >= 128``).

    ``numerics="official"`` is bit-compatible with the official implementation, its GAB bugs included (see
    :class:`gridattn.blocks.GAB`); both modes pad inputs by symmetric mirroring, as the official test code.

    Raises:
        ValueError: a scale other than 2, 3, 4; ``in_channels`` other than 1, 3; ``depths`` and ``num_heads``
            of different lengths (or empty); an ``embed_dim`` not divisible by 4 or that does not split into
            the GAB branches of some ``num_heads``; an unknown ``numerics``; an ``rgb_mean`` without 3 values
            for RGB.

    Examples:
        >>> from gridattn.models import HMANetConfig
        >>> config = HMANetConfig(scale=2, embed_dim=60, depths=(2, 2), num_heads=(6, 6), window_size=8)
        >>> config.pad_multiple                            # lcm(window_size, interval)
        8
        >>> config.replace(numerics="official").numerics
        'official'
        >>> HMANetConfig.from_dict(config.to_dict()) == config
        True
    """

    arch: ClassVar[str] = "hmanet"
    version: ClassVar[int] = CONFIG_VERSION
    resi_connections: ClassVar[tuple[str, ...]] = ("1conv", "identity")
    window_size: int = 16
    interval: int = 4
    grid_bias_dim: int | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale}")
        if self.upsampler != "pixelshuffle":
            raise ValueError(f"HMANet's upsampler is 'pixelshuffle', got {self.upsampler!r}")
        if self.embed_dim % 4:
            raise ValueError(f"embed_dim must be divisible by 4, got {self.embed_dim}")
        for heads in self.num_heads:
            if heads % 2 or (self.embed_dim // 4) % (heads // 2) or (self.embed_dim // 2) % (heads // 2):
                raise ValueError(f"embed_dim={self.embed_dim} does not split into the branches of num_heads={heads}")
        super().__post_init__()

    @property
    def pad_multiple(self) -> int:
        """Inputs are padded to a multiple of this (windows and grids must tile the map)."""
        return math.lcm(self.window_size, self.interval)


class HMANet(SRTransformer):
    """HMANet for single-image super-resolution.

    ``x -> (x - mean) * img_range -> conv_first -> [LN -> RHTB x n -> LN] -> conv_after_body (+ skip)
    -> conv + LeakyReLU -> pixel-shuffle upsampler -> conv_last -> / img_range + mean``
    (:class:`~gridattn.models.sr.SRTransformer` with :class:`~gridattn.blocks.RHTB` groups).

    Any input size works: the image is padded at the bottom/right by symmetric mirroring (as the official
    test code does) to a multiple of ``lcm(window_size, interval)`` and the output cropped to
    ``scale * (H, W)``.

    Set ``model.grad_checkpointing = True`` to recompute each RHTB in the backward pass instead of storing
    its activations (less training memory, about 1.3x the time).

    Args:
        config: the hyper-parameters; see :func:`hmanet_config` for the presets and
            :func:`~gridattn.models.load_model` to build a model from a checkpoint.

    Shapes:
        ``(B, in_channels, H, W)`` -> ``(B, in_channels, scale*H, scale*W)``, values in the input's range
        (``[0, 1]`` for the released models).

    Raises:
        ValueError: in forward, an input that is not a non-empty floating ``(B, in_channels, H, W)`` tensor,
            on another device than the weights, or of another dtype outside autocast.

    Examples:
        >>> import torch
        >>> from gridattn.models import HMANet, hmanet_config
        >>> model = HMANet(hmanet_config(2, "tiny")).eval()
        >>> with torch.no_grad():
        ...     sr = model(torch.rand(1, 3, 21, 30))
        >>> sr.shape
        torch.Size([1, 3, 42, 60])
    """

    official_padding = "symmetric"
    corrected_padding = "symmetric"

    def __init__(self, config: HMANetConfig = HMANetConfig()) -> None:
        super().__init__(config)

    def build_groups(self) -> list[RHTB]:
        c = self.config
        return [RHTB(c.embed_dim, depth=depth, num_heads=heads, window_size=c.window_size, interval=c.interval,
                     mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, drop_path=rates, numerics=c.numerics,
                     grid_bias_dim=c.grid_bias_dim, resi_connection=c.resi_connection)
                for depth, heads, rates in zip(c.depths, c.num_heads, c.drop_path_rates())]


PRESETS = {
    "official": HMANetConfig(),
    "small": HMANetConfig(embed_dim=60, depths=(2,) * 4, num_heads=(6,) * 4, window_size=8, image_skip=True),
    "tiny": HMANetConfig(embed_dim=48, depths=(2, 2), num_heads=(4, 4), window_size=8, drop_path_rate=0.0,
                         image_skip=True),
}
"""HMANet's presets at x4 (:func:`hmanet_config` sets the scale)."""


def hmanet_config(scale: int, size: str = "official", numerics: Numerics = "corrected") -> HMANetConfig:
    """Preset configurations.

    ``"official"``: the released x2/x3/x4 models (embed 180, six RHTBs of depth 6, 6 heads, window 16,
    interval 4, MLP ratio 2). ``"small"``: embed 60, four RHTBs of depth 2, window 8, interval 4 (trains on
    a CPU). ``"tiny"``: embed 48, two RHTBs of depth 2, window 8 (for tests and toy runs). The small and tiny
    presets add the bicubic image skip (``image_skip``) that the official model does not have.

    Args:
        scale: 2, 3 or 4.
        size: ``"official"``, ``"small"`` or ``"tiny"``.
        numerics: ``"corrected"`` or ``"official"``.

    Raises:
        ValueError: an unknown preset, scale or numerics mode.

    Examples:
        >>> from gridattn.models import HMANet, hmanet_config
        >>> config = hmanet_config(4, "small")
        >>> config.embed_dim, config.depths, config.image_skip
        (60, (2, 2, 2, 2), True)
        >>> sum(p.numel() for p in HMANet(hmanet_config(4)).parameters())   # the official x4 model
        69870387
    """
    if size not in PRESETS:
        raise ValueError(f"unknown preset {size!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[size].replace(scale=scale, numerics=numerics)


def hmanet_x2(numerics: Numerics = "corrected") -> HMANet:
    """The official x2 architecture (randomly initialised; see :func:`~gridattn.models.load_hmanet` for weights).

    Same as ``HMANet(hmanet_config(2, "official", numerics))``: 69,722,675 parameters.
    """
    return HMANet(hmanet_config(2, numerics=numerics))


def hmanet_x3(numerics: Numerics = "corrected") -> HMANet:
    """The official x3 architecture (randomly initialised): 69,907,315 parameters."""
    return HMANet(hmanet_config(3, numerics=numerics))


def hmanet_x4(numerics: Numerics = "corrected") -> HMANet:
    """The official x4 architecture (randomly initialised): 69,870,387 parameters."""
    return HMANet(hmanet_config(4, numerics=numerics))
