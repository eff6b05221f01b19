"""SwinIR's weight layout (``JingyunLiang/SwinIR``, ``models/network_swinir.py``) and the configuration read off
a state dict's shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from .._errors import CheckpointError
from ..blocks.numerics import OFFICIAL_MASK_VALUE
from ..functional.masks import window_attention_mask
from ..functional.position import relative_position_index
from .layout import Layout, read_upsampler, required
from .swinir import SwinIRConfig

# The Swin block (FAB: PreNorm(WindowAttention), PreNorm(Mlp)) in the official names; shared with HAT's layout
SWIN_BLOCK_RENAMES = (
    (r"\.attn\.norm\.", ".norm1."),
    (r"\.attn\.fn\.relative_position_bias\.", ".attn."),
    (r"\.attn\.fn\.", ".attn."),
    (r"\.mlp\.norm\.", ".norm2."),
    (r"\.mlp\.fn\.", ".mlp."),
)
RENAMES = (
    (r"^reconstruction\.", ""),
    (r"^embed_norm\.", "patch_embed.norm."),
    (r"^layers\.(\d+)\.blocks\.", r"layers.\1.residual_group.blocks."),
    *SWIN_BLOCK_RENAMES,
)


def _buffers(config: SwinIRConfig) -> dict[str, torch.Tensor]:
    """Each block's ``attn.relative_position_index`` and each shifted block's ``attn_mask`` (for ``img_size``)."""
    window, shift = config.window_size, config.window_size // 2
    index = relative_position_index(window)
    mask = window_attention_mask(config.img_size, config.img_size, window, shift,
                                 masked_value=OFFICIAL_MASK_VALUE)
    buffers = {}
    for i, depth in enumerate(config.depths):
        for j in range(depth):
            block = f"layers.{i}.residual_group.blocks.{j}"
            buffers[f"{block}.attn.relative_position_index"] = index.clone()
            if j % 2:
                buffers[f"{block}.attn_mask"] = mask.clone()
    return buffers


OFFICIAL = Layout(
    "official", renames=RENAMES, buffers=_buffers,
    signature=(r"^conv_first\.weight$", r"^layers\.0\.residual_group\.blocks\.0\.attn\.relative_position_bias_table$",
               r"^layers\.0\.conv\.", r"^patch_embed\.norm\.weight$"),
    excludes=(r"\.conv_block\.", r"overlap_attn", r"\.gab\.", r"fused_conv", r"\.attns\.", r"\.dwconv"),
    source="JingyunLiang/SwinIR (the released classical, lightweight, real-world, denoising and JPEG models)",
)
LAYOUTS = {"official": OFFICIAL}


def infer_config(state: Mapping[str, torch.Tensor]) -> SwinIRConfig:
    """Read an official SwinIR state dict's hyper-parameters off its keys and shapes (official numerics).

    ``img_size`` comes from the stored shifted-window masks (64 without them); ``img_range`` is not in the
    weights: 255 is assumed for scale-1 models with window 7 (the JPEG releases), 1 otherwise.
    """
    def need(key):
        return required(state, key, "a SwinIR")

    embed_dim, in_channels = (int(n) for n in need("conv_first.weight").shape[:2])
    layer_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))})
    depths, heads = [], []
    for i in layer_ids:
        blocks = sorted({int(m.group(1)) for k in state
                         if (m := re.match(rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1\.weight$", k))})
        if not blocks:
            raise CheckpointError(f"not a SwinIR checkpoint: RSTB {i} has no Swin blocks")
        depths.append(len(blocks))
        heads.append(int(need(f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table").shape[1]))
    first = "layers.0.residual_group.blocks.0"
    window = (math.isqrt(need(f"{first}.attn.relative_position_bias_table").shape[0]) + 1) // 2
    mask = state.get("layers.0.residual_group.blocks.1.attn_mask")
    img_size = math.isqrt(mask.shape[0]) * window if mask is not None else 64
    upsampling = read_upsampler(state, in_channels)
    return SwinIRConfig(
        in_channels=in_channels, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(heads),
        window_size=window, mlp_ratio=need(f"{first}.mlp.fc1.weight").shape[0] / embed_dim,
        qkv_bias=f"{first}.attn.qkv.bias" in state, img_size=img_size,
        img_range=255.0 if upsampling["scale"] == 1 and window == 7 else 1.0,
        resi_connection="1conv" if "conv_after_body.weight" in state else "3conv", numerics="official",
        **upsampling,
    )
