"""What the SR transformers (HMANet, SwinIR, HAT, DAT) share: the configuration fields and the image-to-image
skeleton around their bodies.

``image -> (image - mean) * img_range -> [pad] -> conv_first -> LN -> groups -> LN -> conv_after_body (+ skip)
-> reconstruction -> [crop] -> / img_range + mean`` (or ``+ bicubic(image)`` with ``image_skip``). A model is
this skeleton and its ``layers``, a list of residual groups on channels-last maps ``(B, H, W, embed_dim)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..blocks.numerics import Numerics, check_numerics
from ..blocks.reconstruction import RESIDUAL_CONVS, UPSAMPLERS, Reconstruction, ResidualConv, Upsampler, residual_conv
from ..blocks.reconstruction import upsampler_scales as _upsampler_scales
from ..functional._checks import check_like
from ..functional.padding import pad_to_multiple, unpad
from .config import DIV2K_RGB_MEAN, ModelConfig


@dataclass(frozen=True)
class SRConfig(ModelConfig):
    """The fields every SR transformer has (defaults: the official classical models' values).

    Attributes:
        scale: upscaling factor (1 for restoration at the input size).
        in_channels: image channels (3 for RGB, 1 for grayscale).
        embed_dim: feature channels.
        depths: blocks per residual group (one entry per group).
        num_heads: attention heads per group.
        window_size: window of the window attentions (DAT: the ``(h, w)`` of its rectangles).
        mlp_ratio: MLP hidden width relative to ``embed_dim``.
        qkv_bias: bias in the query/key/value projections.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over all blocks.
        img_range: images are scaled by this after the mean is subtracted.
        rgb_mean: subtracted from RGB inputs and added back to outputs (zero for grayscale).
        upsampler: reconstruction, see :data:`~gridattn.blocks.reconstruction.UPSAMPLERS`.
        upsample_features: channels of the reconstruction convolutions.
        resi_connection: the convolution after the body and each group, one of the architecture's
            :attr:`resi_connections` (``"1conv"``, ``"3conv"``, ``"identity"``: those its official code builds).
        image_skip: add the bicubic-upsampled input to the output, so that the network learns only the
            residual (not in the papers; gridattn's small presets use it to learn in minutes on a CPU).
        numerics: ``"corrected"`` (padding masked, exact ``-inf`` masks) or ``"official"`` (the official
            pipeline's padding and ``-100`` masks: the official outputs).
    """

    scale: int = 4
    in_channels: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    img_range: float = 1.0
    rgb_mean: tuple[float, ...] = field(default=DIV2K_RGB_MEAN)
    upsampler: Upsampler = "pixelshuffle"
    upsample_features: int = 64
    resi_connection: ResidualConv = "1conv"
    image_skip: bool = False
    numerics: Numerics = "corrected"

    resi_connections: ClassVar[tuple[ResidualConv, ...]] = RESIDUAL_CONVS
    """The ``resi_connection`` values this architecture takes (its official code's)."""

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {self.upsampler!r}")
        if self.scale not in _upsampler_scales(self.upsampler):
            raise ValueError(f"upsampler {self.upsampler!r} supports scales {_upsampler_scales(self.upsampler)}, "
                             f"got scale {self.scale}")
        if self.resi_connection not in self.resi_connections:
            raise ValueError(f"{self.arch}: resi_connection must be one of {self.resi_connections}, "
                             f"got {self.resi_connection!r}")
        if len(self.depths) != len(self.num_heads) or not self.depths or min(self.depths) < 1:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must be non-empty, equally long "
                             "and positive")
        window = self.window_size if isinstance(self.window_size, tuple) else (self.window_size,)
        if min(window) < 1 or self.embed_dim < 1:
            raise ValueError(f"window_size and embed_dim must be positive, got {self.window_size}, {self.embed_dim}")
        for heads in self.num_heads:
            if heads < 1 or self.embed_dim % heads:
                raise ValueError(f"embed_dim={self.embed_dim} does not split into num_heads={heads}")
        check_numerics(self.numerics)
        if self.in_channels == 3 and len(self.rgb_mean) != 3:
            raise ValueError(f"rgb_mean needs 3 values for RGB, got {self.rgb_mean}")

    @property
    def pad_multiple(self) -> int:
        return self.window_size

    def drop_path_rates(self) -> list[list[float]]:
        """Per group, the stochastic-depth rate of each block (linear from 0 to ``drop_path_rate``)."""
        rates = torch.linspace(0, self.drop_path_rate, sum(self.depths), device="cpu").tolist()  # also under meta
        starts = [sum(self.depths[:i]) for i in range(len(self.depths))]
        return [rates[start:start + depth] for start, depth in zip(starts, self.depths)]


class SRTransformer(nn.Module):
    """The skeleton of an SR transformer; a subclass builds its residual groups (:meth:`build_groups`, kept in
    ``self.layers``) and says how its official pipeline pads (:attr:`official_padding`).

    Set ``model.grad_checkpointing = True`` to recompute each group in the backward pass instead of storing its
    activations (less training memory, about 1.3x the time).

    Shapes:
        ``(B, in_channels, H, W)`` -> ``(B, in_channels, scale*H, scale*W)``, any H and W.

    Raises:
        ValueError: in forward, an input that is not a non-empty floating ``(B, in_channels, H, W)`` tensor,
            on another device than the weights, or of another dtype outside autocast.
    """

    official_padding: str | None = "reflect"
    """How the official pipeline pads inputs to ``config.pad_multiple`` (``F.pad`` mode; ``None``: the model
    needs no padding)."""
    corrected_padding: str | None = None
    """The same in corrected numerics (``None``: the layers pad and mask themselves)."""

    def __init__(self, config: SRConfig) -> None:
        super().__init__()
        self.config = c = config
        mean = c.rgb_mean if c.in_channels == 3 else (0.0,)
        self.register_buffer("rgb_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(c.in_channels, c.embed_dim, 3, padding=1)
        self.embed_norm = nn.LayerNorm(c.embed_dim)
        self.layers = nn.ModuleList(self.build_groups())
        self.norm = nn.LayerNorm(c.embed_dim)
        self.conv_after_body = residual_conv(c.embed_dim, c.resi_connection)
        self.reconstruction = Reconstruction(c.embed_dim, c.in_channels, c.scale, c.upsampler, c.upsample_features)
        self.init_weights()
        self.grad_checkpointing = False

    def build_groups(self) -> list[nn.Module]:
        """The residual groups of ``self.config`` (each ``(B, H, W, embed_dim)`` -> same)."""
        raise NotImplementedError

    def init_weights(self) -> None:
        """The official initialisation: truncated-normal Linear weights (std 0.02), zero biases, unit LayerNorms."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        self._check(x)
        height, width = x.shape[-2:]
        image = x
        mean = self.rgb_mean.to(x.dtype)
        x = (x - mean) * c.img_range
        padding = self.official_padding if c.numerics == "official" else self.corrected_padding
        if padding is not None:
            x = pad_to_multiple(x, c.pad_multiple, mode=padding, dims=(-2, -1))
        features = self.conv_first(x)
        features = self.conv_after_body(self.forward_features(features)) + features
        x = unpad(self.reconstruction(features, x), height * c.scale, width * c.scale, dims=(-2, -1))
        if c.image_skip:
            return x / c.img_range + F.interpolate(image, scale_factor=c.scale, mode="bicubic", align_corners=False)
        return x / c.img_range + mean

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features: ``(B, embed_dim, H, W)`` -> same (LayerNorm, the groups on channels-last maps,
        LayerNorm)."""
        x = self.embed_norm(x.permute(0, 2, 3, 1))  # channels-last from here on
        checkpointing = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False) if checkpointing else layer(x)
        return self.norm(x).permute(0, 3, 1, 2)

    def _check(self, x: torch.Tensor) -> None:
        name, channels = type(self).__name__, self.config.in_channels
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} expects images (B, C, H, W), got {shape}")
        if x.shape[1] != channels:
            raise ValueError(f"{name} expects {channels} channels (B, C, H, W), got {x.shape[1]} in shape "
                             f"{tuple(x.shape)}")
        if not x.is_floating_point() or x.numel() == 0:
            raise ValueError(f"{name} expects a non-empty floating-point image, got {x.dtype} of shape "
                             f"{tuple(x.shape)}")
        check_like(x, self.conv_first.weight, "the image")
