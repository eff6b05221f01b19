"""The convolutional ends of the SR transformers: the residual convolution after a body or group, and the
reconstruction (upsampler) from features to the image.

Submodule names are those of the official SwinIR / HAT / HMANet / DAT codes, so that their weights map by name.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Upsampler = Literal["pixelshuffle", "pixelshuffledirect", "nearest+conv", "none"]
UPSAMPLERS: tuple[Upsampler, ...] = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "none")
"""``pixelshuffle``: conv to ``features`` + LeakyReLU, then conv + pixel shuffle per factor 2 (or one of 3), conv
to the image (classical SR); ``pixelshuffledirect``: one conv + pixel shuffle (lightweight SR);
``nearest+conv``: nearest x2 + conv + LeakyReLU(0.2) per factor 2 (real-world SR, x4); ``none``: one conv to the
image, added to the input (restoration at scale 1: denoising, JPEG)."""
ResidualConv = Literal["1conv", "3conv", "identity"]
RESIDUAL_CONVS: tuple[ResidualConv, ...] = ("1conv", "3conv", "identity")


def upsampler_scales(upsampler: Upsampler) -> tuple[int, ...]:
    """The scales an upsampler supports."""
    return {"pixelshuffle": (2, 3, 4, 8), "pixelshuffledirect": (2, 3, 4, 8), "nearest+conv": (2, 4),
            "none": (1,)}[upsampler]


def residual_conv(dim: int, kind: ResidualConv) -> nn.Module:
    """The convolution closing a residual group or body: ``"1conv"`` (3x3), ``"3conv"`` (3x3 to ``dim // 4``,
    1x1, 3x3 back, LeakyReLU 0.2 between: fewer parameters) or ``"identity"`` (none; HAT and HMA offer it).
    ``(B, dim, H, W)`` -> same."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, padding=1)
    if kind == "3conv":
        narrow = dim // 4
        return nn.Sequential(nn.Conv2d(dim, narrow, 3, padding=1), nn.LeakyReLU(0.2),
                             nn.Conv2d(narrow, narrow, 1), nn.LeakyReLU(0.2), nn.Conv2d(narrow, dim, 3, padding=1))
    if kind == "identity":
        return nn.Identity()
    raise ValueError(f"resi_connection must be one of {RESIDUAL_CONVS}, got {kind!r}")


class Reconstruction(nn.Module):
    """Features ``(B, embed_dim, H, W)`` -> image ``(B, out_channels, scale*H, scale*W)``.

    Args:
        embed_dim: feature channels.
        out_channels: image channels.
        scale: upscaling factor; see :func:`upsampler_scales`.
        upsampler: one of :data:`UPSAMPLERS`.
        features: channels of the ``pixelshuffle`` and ``nearest+conv`` convolutions (64 in every official model).

    ``forward(features, image)``: ``image`` is the normalised input, added back by ``"none"`` only.

    Raises:
        ValueError: an unknown upsampler or a scale it does not support.
    """

    def __init__(self, embed_dim: int, out_channels: int, scale: int, upsampler: Upsampler = "pixelshuffle",
                 features: int = 64) -> None:
        super().__init__()
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")
        if scale not in upsampler_scales(upsampler):
            raise ValueError(f"upsampler {upsampler!r} supports scales {upsampler_scales(upsampler)}, got {scale}")
        self.upsampler, self.scale = upsampler, scale
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, features, 3, padding=1), nn.LeakyReLU(0.01))
            steps: list[nn.Module] = []
            for factor in [3] if scale == 3 else [2] * int(math.log2(scale)):
                steps += [nn.Conv2d(features, factor * factor * features, 3, padding=1), nn.PixelShuffle(factor)]
            self.upsample = nn.Sequential(*steps)
            self.conv_last = nn.Conv2d(features, out_channels, 3, padding=1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, scale * scale * out_channels, 3, padding=1),
                                          nn.PixelShuffle(scale))
        elif upsampler == "nearest+conv":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, features, 3, padding=1), nn.LeakyReLU(0.01))
            self.conv_up1 = nn.Conv2d(features, features, 3, padding=1)
            self.conv_up2 = nn.Conv2d(features, features, 3, padding=1) if scale == 4 else None
            self.conv_hr = nn.Conv2d(features, features, 3, padding=1)
            self.conv_last = nn.Conv2d(features, out_channels, 3, padding=1)
        else:
            self.conv_last = nn.Conv2d(embed_dim, out_channels, 3, padding=1)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if self.upsampler == "pixelshuffle":
            return self.conv_last(self.upsample(self.conv_before_upsample(features)))
        if self.upsampler == "pixelshuffledirect":
            return self.upsample(features)
        if self.upsampler == "nearest+conv":
            x = self.conv_before_upsample(features)
            for conv in (self.conv_up1, self.conv_up2):
                if conv is not None:
                    x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode="nearest")), 0.2)
            return self.conv_last(F.leaky_relu(self.conv_hr(x), 0.2))
        return image + self.conv_last(features)

    def extra_repr(self) -> str:
        return f"upsampler={self.upsampler!r}, scale={self.scale}"
