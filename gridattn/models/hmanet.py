"""HMANet (Hybrid Multi-Axis Aggregation Network, arXiv 2405.05001) built from gridattn's blocks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..blocks import RHTB
from ..blocks.numerics import Numerics, check_numerics
from ..functional._checks import check_like
from ..functional.padding import pad_to_multiple, unpad

SCALES = (2, 3, 4)
"""Upscaling factors HMANet's pixel-shuffle upsampler supports."""
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
"""RGB mean of DIV2K, subtracted from inputs and added back to outputs by the official models."""
CONFIG_VERSION = 1
"""Version of :meth:`HMANetConfig.to_dict`'s encoding; dicts without ``"version"`` (gridattn 0.1) read as 0."""


@dataclass(frozen=True)
class HMANetConfig:
    """Hyper-parameters of an HMANet. The defaults are the official x4 model.

    Attributes:
        scale: upscaling factor (2, 3 or 4; pixel-shuffle upsampler).
        in_channels: image channels (3 for RGB, 1 for grayscale).
        embed_dim: feature channels.
        depths: FAB blocks per RHTB (one entry per RHTB).
        num_heads: attention heads per RHTB.
        window_size: window of the window attentions.
        interval: interval of the grid attention.
        mlp_ratio: MLP hidden width relative to ``embed_dim``.
        qkv_bias: bias in the query/key/value projections.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over all FABs.
        img_range: images are scaled by this after the mean is subtracted.
        rgb_mean: subtracted from RGB inputs and added back to outputs (zero for grayscale).
        upsample_features: channels of the reconstruction convolutions.
        grid_bias_dim: width of the grid attention's position-bias MLPs; ``None`` for
            :class:`~gridattn.GridAttention`'s default (the official value for ``embed_dim >= 128``).
        image_skip: add the bicubic-upsampled input to the output, so that the network learns only the
            residual. Not in the paper (the official presets have it off); the ``"tiny"`` and ``"small"``
            presets use it so that they beat bicubic after minutes of CPU training.
        numerics: ``"corrected"`` (default for new models) or ``"official"`` (bit-compatible with the
            official implementation, its GAB bugs included; see :class:`gridattn.blocks.GAB`).

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

    scale: int = 4
    in_channels: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 16
    interval: int = 4
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    img_range: float = 1.0
    rgb_mean: tuple[float, ...] = field(default=DIV2K_RGB_MEAN)
    upsample_features: int = 64
    grid_bias_dim: int | None = None
    image_skip: bool = False
    numerics: Numerics = "corrected"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must be non-empty and equally long")
        for heads in self.num_heads:
            if heads % 2 or (self.embed_dim // 4) % (heads // 2) or (self.embed_dim // 2) % (heads // 2):
                raise ValueError(f"embed_dim={self.embed_dim} does not split into the branches of num_heads={heads}")
        if self.embed_dim % 4:
            raise ValueError(f"embed_dim must be divisible by 4, got {self.embed_dim}")
        check_numerics(self.numerics)
        if self.in_channels == 3 and len(self.rgb_mean) != 3:
            raise ValueError(f"rgb_mean needs 3 values for RGB, got {self.rgb_mean}")

    @property
    def pad_multiple(self) -> int:
        """Inputs are padded to a multiple of this (windows and grids must tile the map)."""
        return math.lcm(self.window_size, self.interval)

    def replace(self, **changes) -> HMANetConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``), validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values (tuples as lists) with its ``"version"``.

        This is the one encoding of a configuration: checkpoints (``.pth``, ``.safetensors``), trainer
        checkpoints and ONNX metadata all store it, and :meth:`from_dict` reads it back.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"version": CONFIG_VERSION, **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HMANetConfig:
        """The configuration encoded by :meth:`to_dict` (also the unversioned dicts of gridattn 0.1).

        Raises:
            TypeError: ``data`` is not a mapping.
            ValueError: a version newer than this gridattn reads, unknown fields, or values that are not a
                valid configuration.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"an HMANet configuration must be a mapping of its fields, got {type(data).__name__}")
        version = data.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= CONFIG_VERSION:
            raise ValueError(f"configuration version {version!r} is not one this gridattn reads (0 to "
                             f"{CONFIG_VERSION}): written by a newer gridattn?")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"version"})
        if unknown:
            raise ValueError(f"unknown fields {unknown} (written by a newer gridattn?)")
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "version"})
        except TypeError as error:
            raise ValueError(f"fields of the wrong type ({error})") from None


class HMANet(nn.Module):
    """HMANet for single-image super-resolution.

    ``x -> (x - mean) * img_range -> conv_first -> [LN -> RHTB x n -> LN] -> conv_after_body (+ skip)
    -> conv + LeakyReLU -> pixel-shuffle upsampler -> conv_last -> / img_range + mean``.

    Any input size works: the image is padded at the bottom/right by symmetric mirroring (as the official
    test code does) to a multiple of ``lcm(window_size, interval)`` and the output cropped to
    ``scale * (H, W)``.

    Set ``model.grad_checkpointing = True`` to recompute each RHTB in the backward pass instead of storing
    its activations (less training memory, about 1.3x the time).

    Args:
        config: the hyper-parameters; see :func:`hmanet_config` for the presets and
            :func:`~gridattn.models.load_hmanet` to build a model from a checkpoint.

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

    def __init__(self, config: HMANetConfig = HMANetConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        mean = c.rgb_mean if c.in_channels == 3 else (0.0,)
        self.register_buffer("rgb_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(c.in_channels, c.embed_dim, 3, padding=1)
        self.embed_norm = nn.LayerNorm(c.embed_dim)
        rates = torch.linspace(0, c.drop_path_rate, sum(c.depths), device="cpu").tolist()  # also under a meta device
        starts = [sum(c.depths[:i]) for i in range(len(c.depths))]
        self.layers = nn.ModuleList(
            RHTB(c.embed_dim, depth=depth, num_heads=heads, window_size=c.window_size, interval=c.interval,
                 mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, drop_path=rates[start:start + depth],
                 numerics=c.numerics, grid_bias_dim=c.grid_bias_dim)
            for depth, heads, start in zip(c.depths, c.num_heads, starts)
        )
        self.norm = nn.LayerNorm(c.embed_dim)
        self.conv_after_body = nn.Conv2d(c.embed_dim, c.embed_dim, 3, padding=1)
        feats = c.upsample_features
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(c.embed_dim, feats, 3, padding=1), nn.LeakyReLU(0.01))
        upsample: list[nn.Module] = []
        for factor in ([2] * int(math.log2(c.scale)) if c.scale in (2, 4) else [3]):
            upsample += [nn.Conv2d(feats, factor * factor * feats, 3, padding=1), nn.PixelShuffle(factor)]
        self.upsample = nn.Sequential(*upsample)
        self.conv_last = nn.Conv2d(feats, c.in_channels, 3, padding=1)
        self.apply(_init_weights)
        # recompute each RHTB in backward instead of storing its activations (training memory, ~1.3x time)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"HMANet expects images (B, C, H, W), got {shape}")
        if x.shape[1] != c.in_channels:
            raise ValueError(
                f"HMANet expects {c.in_channels} channels (B, C, H, W), got {x.shape[1]} in shape {tuple(x.shape)}"
            )
        if not x.is_floating_point() or x.numel() == 0:
            raise ValueError(
                f"HMANet expects a non-empty floating-point image, got {x.dtype} of shape {tuple(x.shape)}"
            )
        check_like(x, self.conv_first.weight, "the image")
        height, width = x.shape[-2:]
        image = x
        mean = self.rgb_mean.to(x.dtype)
        x = pad_to_multiple((x - mean) * c.img_range, c.pad_multiple, mode="symmetric", dims=(-2, -1))
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = unpad(self.conv_last(self.upsample(self.conv_before_upsample(x))), height * c.scale, width * c.scale,
                  dims=(-2, -1))
        if c.image_skip:
            return x / c.img_range + F.interpolate(image, scale_factor=c.scale, mode="bicubic", align_corners=False)
        return x / c.img_range + mean

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features: ``(B, embed_dim, H, W)`` -> same, H and W already padded.

    The body between ``conv_first`` and ``conv_after_body``: LayerNorm, the RHTBs on channels-last maps,
    LayerNorm. ``H`` and ``W`` must be multiples of ``config.pad_multiple``.
    """
        x = self.embed_norm(x.permute(0, 2, 3, 1))  # channels-last from here on
        checkpointing = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False) if checkpointing else layer(x)
        return self.norm(x).permute(0, 3, 1, 2)


def _init_weights(module: nn.Module) -> None:
    """The official initialisation: truncated-normal Linear weights (std 0.02), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


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
    presets = {
        "official": HMANetConfig(),
        "small": HMANetConfig(embed_dim=60, depths=(2,) * 4, num_heads=(6,) * 4, window_size=8, image_skip=True),
        "tiny": HMANetConfig(embed_dim=48, depths=(2, 2), num_heads=(4, 4), window_size=8, drop_path_rate=0.0,
                             image_skip=True),
    }
    if size not in presets:
        raise ValueError(f"unknown preset {size!r}; expected one of {sorted(presets)}")
    return presets[size].replace(scale=scale, numerics=numerics)


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
