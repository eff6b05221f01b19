"""DAT (Dual Aggregation Transformer, Chen et al., ICCV 2023, ``zhengchen1999/DAT``) built from gridattn's blocks:
residual groups alternating rectangle-window and channel self-attention in the SR skeleton."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..blocks import DATGroup
from ..blocks.numerics import mask_value
from .sr import SRConfig, SRTransformer

CONFIG_VERSION = 1


@dataclass(frozen=True)
class DATConfig(SRConfig):
    """Hyper-parameters of a DAT: the fields of :class:`~gridattn.models.sr.SRConfig` (defaults: DAT x4) with

    Attributes:
        window_size: ``(h, w)`` of the spatial attention's rectangles (the official ``split_size``, ``(8, 32)``):
            half the channels attend in ``h x w`` windows, half in ``w x h``.
        mlp_ratio: the SGFN's hidden width relative to ``embed_dim`` (the official ``expansion_factor``).
        img_size: the official code's training patch size. It only sizes the shifted-window masks that the
            official code keeps in its state dict (``attn_mask_0`` / ``_1``); written with the weights, read off
            them (64 when a file has none). Outputs never depend on it.

    ``numerics="official"`` zero-pads each spatial attention's queries, keys and values to a multiple of the
    longer window side and lets the real tokens attend to that padding, and masks shifts with ``-100``, as the
    official code; ``"corrected"`` masks the padding exactly (``-inf``). No padding happens at the model level:
    the channel attention and the convolutions take any size.

    Raises:
        ValueError: as :class:`~gridattn.models.sr.SRConfig`; an odd number of heads (half per window orientation);
            a ``resi_connection`` other than ``"1conv"`` / ``"3conv"``; a longer window side that the shorter does
            not divide (the official padding would not tile both orientations); an ``img_size`` that is not a
            multiple of both window sides; fewer than 16 channels.

    Examples:
        >>> from gridattn.models import DAT, dat_config
        >>> dat_config(2, "dat_light").upsampler
        'pixelshuffledirect'
        >>> sum(p.numel() for p in DAT(dat_config(4, "dat_s")).parameters())
        11212131
    """

    arch: ClassVar[str] = "dat"
    version: ClassVar[int] = CONFIG_VERSION
    resi_connections: ClassVar[tuple[str, ...]] = ("1conv", "3conv")
    window_size: tuple[int, int] = (8, 32)
    mlp_ratio: float = 4.0
    img_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.window_size, tuple) and len(self.window_size) == 2):
            raise ValueError(f"window_size must be a pair (h, w), got {self.window_size!r}")
        short, long = sorted(self.window_size)
        if long % short:
            raise ValueError(f"window_size {self.window_size}: the official code pads to a multiple of the longer "
                             "side, which the shorter must divide")
        if self.img_size % long:
            raise ValueError(f"img_size {self.img_size} must be a multiple of both window sides {self.window_size} "
                             "(the official code's masks tile it with windows)")
        if self.embed_dim < 16:
            raise ValueError(f"embed_dim must be at least 16 (the interaction's spatial gate is embed_dim // 16 "
                             f"wide), got {self.embed_dim}")
        for heads in self.num_heads:
            if heads % 2:
                raise ValueError(f"num_heads must be even (half per window orientation), got {self.num_heads}")

    @property
    def pad_multiple(self) -> int:
        return max(self.window_size)


def first_block_shifted(group: int) -> bool:
    """Whether group ``group``'s first spatial block is shifted: in the odd-numbered groups (the official rule)."""
    return group % 2 == 1


class DAT(SRTransformer):
    """DAT for super-resolution (``pixelshuffle``, and ``pixelshuffledirect`` for DAT-light):
    :class:`~gridattn.models.sr.SRTransformer` with :class:`~gridattn.blocks.DATGroup` groups.

    Args:
        config: the hyper-parameters; see :func:`dat_config` for the released configurations.

    Shapes:
        ``(B, in_channels, H, W)`` -> ``(B, in_channels, scale*H, scale*W)``, any H and W.

    Examples:
        >>> import torch
        >>> from gridattn.models import DAT, dat_config
        >>> model = DAT(dat_config(2, "tiny")).eval()
        >>> with torch.no_grad():
        ...     model(torch.rand(1, 3, 13, 21)).shape
        torch.Size([1, 3, 26, 42])
    """

    official_padding = None
    corrected_padding = None

    def __init__(self, config: DATConfig = DATConfig()) -> None:
        super().__init__(config)

    def build_groups(self) -> list[DATGroup]:
        c = self.config
        official = c.numerics == "official"
        return [DATGroup(c.embed_dim, depth=depth, num_heads=heads, window_size=c.window_size,
                         first_shifted=first_block_shifted(i), mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
                         drop_path=rates, mask_value=mask_value(c.numerics),
                         zero_padding_multiple=c.pad_multiple if official else None, resi_connection=c.resi_connection)
                for i, (depth, heads, rates) in enumerate(zip(c.depths, c.num_heads, c.drop_path_rates()))]


_SMALL = dict(mlp_ratio=2.0)
PRESETS = {
    "dat": DATConfig(),
    "dat_s": DATConfig(window_size=(8, 16), **_SMALL),
    "dat_2": DATConfig(**_SMALL),
    "dat_light": DATConfig(embed_dim=60, depths=(18,), num_heads=(6,), resi_connection="3conv",
                           upsampler="pixelshuffledirect", **_SMALL),
    "tiny": DATConfig(embed_dim=64, depths=(2, 2), num_heads=(4, 4), window_size=(4, 16), drop_path_rate=0.0,
                      image_skip=True, **_SMALL),
}
"""DAT's released configurations (``options/Test``: DAT, DAT-S, DAT-2, DAT-light) and ``tiny`` (CPU training in
minutes, with the bicubic image skip); :func:`dat_config` sets the scale."""


def dat_config(scale: int, size: str = "dat", **changes) -> DATConfig:
    """A preset configuration at ``scale``: ``"dat"`` (embed 180, six groups of 6, windows 8x32, SGFN ratio 4),
    ``"dat_s"`` (windows 8x16, ratio 2), ``"dat_2"`` (ratio 2), ``"dat_light"`` (embed 60, one group of 18,
    ``3conv``, ``pixelshuffledirect``), ``"tiny"``; ``changes`` replace fields.

    Raises:
        ValueError: an unknown preset, or a scale the preset's upsampler does not support.
    """
    if size not in PRESETS:
        raise ValueError(f"unknown DAT preset {size!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[size].replace(scale=scale, **changes)
