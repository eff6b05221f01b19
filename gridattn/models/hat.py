"""HAT (Hybrid Attention Transformer, Chen et al., CVPR 2023, ``XPixelGroup/HAT``) built from gridattn's blocks:
RHAG groups (hybrid attention blocks and an overlapping cross-attention block) in the SR skeleton."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..blocks import RHAG
from ..blocks.numerics import mask_value
from .sr import SRConfig, SRTransformer

CONFIG_VERSION = 1
SCALES = (2, 3, 4)


@dataclass(frozen=True)
class HATConfig(SRConfig):
    """Hyper-parameters of a HAT: the fields of :class:`~gridattn.models.sr.SRConfig` (defaults: HAT x4, window
    16) and:

    Attributes:
        compress_ratio: channel compression of the HABs' convolution branch.
        squeeze_factor: squeeze ratio of that branch's channel attention.
        conv_scale: weight of the convolution branch.
        overlap_ratio: the OCABs' key/value windows are ``window_size + int(overlap_ratio * window_size)`` wide.

    ``numerics="official"`` pads inputs by reflection to a multiple of the window (HAT's test wrapper), masks
    with ``-100`` and lets the OCABs attend to the zero keys beyond the map, as the official code; ``"corrected"``
    pads nothing at the model level and masks every padded key exactly.

    Raises:
        ValueError: as :class:`~gridattn.models.sr.SRConfig`; a scale other than 2, 3, 4 or an upsampler other than
            ``"pixelshuffle"``; an overlap whose key window does not exceed the query window by an even amount.

    Examples:
        >>> from gridattn.models import HAT, hat_config
        >>> sum(p.numel() for p in HAT(hat_config(4, "hat_s")).parameters())
        9621183
    """

    arch: ClassVar[str] = "hat"
    version: ClassVar[int] = CONFIG_VERSION
    resi_connections: ClassVar[tuple[str, ...]] = ("1conv", "identity")
    window_size: int = 16
    compress_ratio: int = 3
    squeeze_factor: int = 30
    conv_scale: float = 0.01
    overlap_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.scale not in SCALES or self.upsampler != "pixelshuffle":
            raise ValueError(f"HAT upsamples by pixel shuffle at scales {SCALES}, got {self.upsampler!r} x{self.scale}")
        if int(self.window_size * self.overlap_ratio) % 2:
            raise ValueError(f"overlap_ratio {self.overlap_ratio} at window {self.window_size} gives an odd overlap "
                             f"of {int(self.window_size * self.overlap_ratio)} pixels, which the official code cannot "
                             "centre")
        super().__post_init__()


class HAT(SRTransformer):
    """HAT for super-resolution: :class:`~gridattn.models.sr.SRTransformer` with :class:`~gridattn.blocks.RHAG`
    groups.

    Args:
        config: the hyper-parameters; see :func:`hat_config` for the released configurations.

    Shapes:
        ``(B, in_channels, H, W)`` -> ``(B, in_channels, scale*H, scale*W)``, any H and W.

    Examples:
        >>> import torch
        >>> from gridattn.models import HAT, hat_config
        >>> model = HAT(hat_config(2, "tiny")).eval()
        >>> with torch.no_grad():
        ...     model(torch.rand(1, 3, 13, 21)).shape
        torch.Size([1, 3, 26, 42])
    """

    official_padding = "reflect"
    corrected_padding = None

    def __init__(self, config: HATConfig = HATConfig()) -> None:
        super().__init__(config)

    def build_groups(self) -> list[RHAG]:
        c = self.config
        return [RHAG(c.embed_dim, depth=depth, num_heads=heads, window_size=c.window_size,
                     overlap_ratio=c.overlap_ratio, compress_ratio=c.compress_ratio, squeeze_factor=c.squeeze_factor,
                     conv_scale=c.conv_scale, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, drop_path=rates,
                     mask_value=mask_value(c.numerics), official_padding=c.numerics == "official",
                     resi_connection=c.resi_connection)
                for depth, heads, rates in zip(c.depths, c.num_heads, c.drop_path_rates())]


PRESETS = {
    "hat": HATConfig(),
    "hat_s": HATConfig(embed_dim=144, compress_ratio=24, squeeze_factor=24),
    "hat_l": HATConfig(depths=(6,) * 12, num_heads=(6,) * 12),
    "tiny": HATConfig(embed_dim=48, depths=(2, 2), num_heads=(4, 4), window_size=8, squeeze_factor=16,
                      drop_path_rate=0.0, image_skip=True),
}
"""HAT's released configurations (``options/test``: HAT, HAT-S, HAT-L) and ``tiny`` (CPU training in minutes, with
the bicubic image skip); :func:`hat_config` sets the scale."""


def hat_config(scale: int, size: str = "hat", **changes) -> HATConfig:
    """A preset configuration at ``scale`` (2, 3 or 4): ``"hat"`` (embed 180, six RHAGs of 6, window 16),
    ``"hat_s"`` (embed 144, compress and squeeze 24), ``"hat_l"`` (twelve RHAGs), ``"tiny"``; ``changes`` replace
    fields.

    Raises:
        ValueError: an unknown preset or scale.
    """
    if size not in PRESETS:
        raise ValueError(f"unknown HAT preset {size!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[size].replace(scale=scale, **changes)
