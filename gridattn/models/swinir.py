"""SwinIR (Liang et al., ICCV-W 2021, ``JingyunLiang/SwinIR``) built from gridattn's blocks: RSTB groups of Swin
blocks in the SR skeleton."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..blocks import RSTB
from ..blocks.numerics import mask_value
from .sr import SRConfig, SRTransformer

CONFIG_VERSION = 1


@dataclass(frozen=True)
class SwinIRConfig(SRConfig):
    """Hyper-parameters of a SwinIR: the fields of :class:`~gridattn.models.sr.SRConfig` (defaults: the classical
    x4 model, window 8) and:

    Attributes:
        img_size: the official code's training patch size. It only sizes the shifted-window masks that the
            official code keeps in its state dict (``attn_mask``); written with the weights, read off them (64
            when a file has no masks). Outputs never depend on it: the official code builds the masks of other
            sizes afresh.

    ``numerics="official"`` pads inputs by reflection to a multiple of the window inside the forward, as the
    official model does, and masks with ``-100``; ``"corrected"`` pads nothing at the model level (the window
    attentions pad and mask their windows themselves, exactly).

    Raises:
        ValueError: as :class:`~gridattn.models.sr.SRConfig`, and an ``img_size`` not above the window (the
            official code then changes its window and drops the shift) or not a multiple of it (the official code
            cannot build its masks).

    Examples:
        >>> from gridattn.models import SwinIR, swinir_config
        >>> swinir_config(2, "lightweight").upsampler
        'pixelshuffledirect'
        >>> sum(p.numel() for p in SwinIR(swinir_config(4, "classical")).parameters())
        11900199
    """

    arch: ClassVar[str] = "swinir"
    version: ClassVar[int] = CONFIG_VERSION
    resi_connections: ClassVar[tuple[str, ...]] = ("1conv", "3conv")
    img_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.img_size <= self.window_size or self.img_size % self.window_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of window_size {self.window_size} above "
                             "it (the official code's masks tile it with windows)")


class SwinIR(SRTransformer):
    """SwinIR for super-resolution (``pixelshuffle``, ``pixelshuffledirect``, ``nearest+conv``) and for
    restoration at scale 1 (denoising, JPEG artefacts): :class:`~gridattn.models.sr.SRTransformer` with
    :class:`~gridattn.blocks.RSTB` groups.

    Args:
        config: the hyper-parameters; see :func:`swinir_config` for the released configurations.

    Shapes:
        ``(B, in_channels, H, W)`` -> ``(B, in_channels, scale*H, scale*W)``, any H and W.

    Examples:
        >>> import torch
        >>> from gridattn.models import SwinIR, swinir_config
        >>> model = SwinIR(swinir_config(2, "tiny")).eval()
        >>> with torch.no_grad():
        ...     model(torch.rand(1, 3, 13, 21)).shape
        torch.Size([1, 3, 26, 42])
    """

    official_padding = "reflect"
    corrected_padding = None

    def __init__(self, config: SwinIRConfig = SwinIRConfig()) -> None:
        super().__init__(config)

    def build_groups(self) -> list[RSTB]:
        c = self.config
        return [RSTB(c.embed_dim, depth=depth, num_heads=heads, window_size=c.window_size, mlp_ratio=c.mlp_ratio,
                     qkv_bias=c.qkv_bias, drop_path=rates, mask_value=mask_value(c.numerics),
                     resi_connection=c.resi_connection)
                for depth, heads, rates in zip(c.depths, c.num_heads, c.drop_path_rates())]


_LARGE = dict(embed_dim=240, depths=(6,) * 9, num_heads=(8,) * 9, resi_connection="3conv")
_RESTORATION = dict(upsampler="none", img_size=128)
_JPEG = dict(upsampler="none", img_size=126, window_size=7, img_range=255.0)
PRESETS = {
    "classical": SwinIRConfig(),
    "lightweight": SwinIRConfig(embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, upsampler="pixelshuffledirect"),
    "realworld": SwinIRConfig(upsampler="nearest+conv"),
    "realworld_large": SwinIRConfig(upsampler="nearest+conv", **_LARGE),
    "denoise_gray": SwinIRConfig(scale=1, in_channels=1, **_RESTORATION),
    "denoise_color": SwinIRConfig(scale=1, **_RESTORATION),
    "jpeg_gray": SwinIRConfig(scale=1, in_channels=1, **_JPEG),
    "jpeg_color": SwinIRConfig(scale=1, **_JPEG),
    "tiny": SwinIRConfig(embed_dim=48, depths=(2, 2), num_heads=(4, 4), drop_path_rate=0.0, image_skip=True),
}
"""SwinIR's released configurations (``main_test_swinir.py``) and ``tiny`` (CPU training in minutes, with the
bicubic image skip); :func:`swinir_config` sets the scale."""


def swinir_config(scale: int, size: str = "classical", **changes) -> SwinIRConfig:
    """A preset configuration at ``scale``: ``"classical"`` (x2/x3/x4/x8, embed 180, six RSTBs of 6), ``"lightweight"``
    (embed 60, four RSTBs, ``pixelshuffledirect``), ``"realworld"`` (x2/x4, ``nearest+conv``), ``"realworld_large"``
    (embed 240, nine RSTBs, 8 heads, ``3conv``), ``"denoise_gray"`` / ``"denoise_color"`` and ``"jpeg_gray"`` /
    ``"jpeg_color"`` (scale 1; JPEG: window 7, ``img_range`` 255), ``"tiny"``; ``changes`` replace fields.

    Raises:
        ValueError: an unknown preset, or a scale the preset's upsampler does not support.
    """
    if size not in PRESETS:
        raise ValueError(f"unknown SwinIR preset {size!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[size].replace(scale=scale, **changes)
