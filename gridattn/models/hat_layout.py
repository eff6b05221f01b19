"""HAT's weight layout (``XPixelGroup/HAT``, ``hat/archs/hat_arch.py``) and the configuration read off a state
dict's shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from .._errors import CheckpointError
from ..functional.position import relative_position_index
from .hat import SCALES, HATConfig
from .layout import Layout, pixel_shuffle_scale, required
from .swinir_layout import SWIN_BLOCK_RENAMES

RENAMES = (
    (r"^reconstruction\.", ""),
    (r"^embed_norm\.", "patch_embed.norm."),
    (r"^layers\.(\d+)\.(blocks|overlap_attn)\.", r"layers.\1.residual_group.\2."),
    # HAB: the attention and the CAB share norm1
    (r"(\.blocks\.\d+)\.norm\.", r"\1.norm1."),
    (r"\.conv_block\.conv1\.", ".conv_block.cab.0."),
    (r"\.conv_block\.conv2\.", ".conv_block.cab.2."),
    (r"\.conv_block\.channel_attention\.fc1\.", ".conv_block.cab.3.attention.1."),
    (r"\.conv_block\.channel_attention\.fc2\.", ".conv_block.cab.3.attention.3."),
    (r"(\.blocks\.\d+)\.attn\.relative_position_bias\.", r"\1.attn."),
    # OCAB: its attention's weights sit in the block itself
    (r"\.overlap_attn\.attn\.norm\.", ".overlap_attn.norm1."),
    (r"\.overlap_attn\.attn\.fn\.", ".overlap_attn."),
    *SWIN_BLOCK_RENAMES,
)


def overlapping_index(window_size: int, overlap_ratio: float) -> torch.Tensor:
    """The official ``relative_position_index_OCA`` ``(ws², ows²)``: rows of the OCAB's table by query/key offset,
    as HAT computes it (entries may be negative: torch's indexing wraps them round)."""
    ows = window_size + int(overlap_ratio * window_size)
    qy, qx = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing="ij")
    dy = ky.flatten()[None, :] - qy.flatten()[:, None] + window_size - ows + 1
    dx = kx.flatten()[None, :] - qx.flatten()[:, None] + window_size - ows + 1
    return dy * (window_size + ows - 1) + dx


def _buffers(config: HATConfig) -> dict[str, torch.Tensor]:
    return {"relative_position_index_SA": relative_position_index(config.window_size).clone(),
            "relative_position_index_OCA": overlapping_index(config.window_size, config.overlap_ratio)}


OFFICIAL = Layout(
    "official", renames=RENAMES, conv_1x1=r"\.channel_attention\.fc[12]\.weight$", buffers=_buffers,
    signature=(r"^conv_first\.weight$", r"^layers\.0\.residual_group\.blocks\.0\.conv_block\.cab\.0\.weight$",
               r"^layers\.0\.residual_group\.overlap_attn\.relative_position_bias_table$", r"^conv_last\.weight$"),
    source="XPixelGroup/HAT (HAT, HAT-S, HAT-L at x2/x3/x4)",
)
LAYOUTS = {"official": OFFICIAL}


def infer_config(state: Mapping[str, torch.Tensor]) -> HATConfig:
    """Read an official HAT state dict's hyper-parameters off its keys and shapes (official numerics).

    The overlap ratio comes from the OCAB's table; ``conv_scale`` is not in the weights: the official 0.01 is
    assumed.
    """
    def need(key):
        return required(state, key, "a HAT")

    embed_dim, in_channels = (int(n) for n in need("conv_first.weight").shape[:2])
    layer_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))})
    depths, heads = [], []
    for i in layer_ids:
        blocks = {int(m.group(1)) for k in state
                  if (m := re.match(rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1\.weight$", k))}
        if not blocks:
            raise CheckpointError(f"not a HAT checkpoint: RHAG {i} has no HABs")
        depths.append(len(blocks))
        heads.append(int(need(f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table").shape[1]))
    first = "layers.0.residual_group"
    window = (math.isqrt(need(f"{first}.blocks.0.attn.relative_position_bias_table").shape[0]) + 1) // 2
    ows = math.isqrt(need(f"{first}.overlap_attn.relative_position_bias_table").shape[0]) + 1 - window
    hidden = need(f"{first}.blocks.0.conv_block.cab.0.weight").shape[0]
    squeezed = need(f"{first}.blocks.0.conv_block.cab.3.attention.1.weight").shape[0]
    feats = int(need("conv_before_upsample.0.weight").shape[0])
    scale = pixel_shuffle_scale(state, feats, SCALES)
    return HATConfig(
        scale=scale, in_channels=in_channels, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(heads),
        window_size=window, mlp_ratio=need(f"{first}.blocks.0.mlp.fc1.weight").shape[0] / embed_dim,
        qkv_bias=f"{first}.blocks.0.attn.qkv.bias" in state, compress_ratio=embed_dim // hidden,
        squeeze_factor=embed_dim // squeezed, overlap_ratio=(ows - window) / window, upsample_features=feats,
        resi_connection="1conv" if "conv_after_body.weight" in state else "identity", numerics="official",
    )
