"""HMANet's weight layouts: the official code's (``korouuuuu/HMA``) and neosr's (``neosr-project/neosr``, the
same keys with an RGB mean of 0.5), and the configuration read off a state dict's shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from .._errors import CheckpointError
from ..functional.position import relative_position_index
from ..layers.position import dynamic_bias_width
from .hmanet import SCALES, HMANetConfig
from .layout import Layout, MergedRows, pixel_shuffle_scale, required

_RENAMES = (
    (r"^reconstruction\.", ""),
    (r"^embed_norm\.", "patch_embed.norm."),
    (r"^layers\.(\d+)\.(blocks|gab|scale)", r"layers.\1.residual_group.\2"),
    # FusedConv
    (r"(\.blocks\.\d+)\.norm\.", r"\1.pre_norm."),
    (r"(\.blocks\.\d+)\.expand\.", r"\1.fused_conv."),
    (r"(\.blocks\.\d+)\.expand_norm\.", r"\1.norm1."),
    (r"(\.blocks\.\d+)\.project\.", r"\1.conv3_1x1."),
    # FAB
    (r"\.attn\.norm\.", ".norm1."),
    (r"\.attn\.fn\.qkv\.", ".qkv."),
    (r"\.attn\.fn\.relative_position_bias\.", ".attn."),
    (r"\.attn\.fn\.proj\.", ".attn.proj."),
    # FAB and GAB MLPs
    (r"\.mlp\.norm\.", ".norm2."),
    (r"\.mlp\.fn\.", ".mlp."),
    # GAB
    (r"\.(window_attn|window_attn_s)\.relative_position_bias\.", r".\1."),
    (r"\.grid_attn\.grid_proj\.", ".grid_proj."),
    (r"\.grid_attn\.position_biases\.0\.", ".grid_attn.attn_transform1.pos."),
    (r"\.grid_attn\.position_biases\.1\.", ".grid_attn.attn_transform2.pos."),
    (r"\.gab\.(window_attn|window_attn_s|grid_attn)\.qkv\.", ".gab.qkv."),
)


def _buffers(config: HMANetConfig) -> dict[str, torch.Tensor]:
    return {"relative_position_index_SA": relative_position_index(config.window_size).clone()}


_COMMON = dict(
    renames=_RENAMES,
    conv_1x1=r"(\.se\.fc[12]|\.project)\.weight$",
    merged=(MergedRows(r"\.gab\.(window_attn|window_attn_s|grid_attn)\.qkv\.",
                       ("window_attn", "window_attn_s", "grid_attn")),),
    buffers=_buffers,
    # Every HMANet state dict has these keys, whatever its size, scale, channels or qkv_bias; together they are
    # HMANet's alone (HAT, ATD and SwinIR share the layers.N.residual_group / conv_first names, not the GAB).
    signature=(r"^conv_first\.weight$", r"^layers\.0\.residual_group\.gab\.grid_proj\.weight$",
               r"^layers\.0\.residual_group\.gab\.grid_attn\.attn_transform1\.pos\.pos_proj\.weight$",
               r"^layers\.0\.residual_group\.blocks\.0\.fused_conv\.weight$", r"^conv_last\.weight$"),
)
OFFICIAL = Layout("official", **_COMMON, source="korouuuuu/HMA (the released HMA_SRx2/x3/x4)")
NEOSR_RGB_MEAN = (0.5, 0.5, 0.5)
NEOSR = Layout("neosr", **_COMMON, config_changes={"rgb_mean": NEOSR_RGB_MEAN},
               source="neosr-project/neosr (hma, hma_medium, hma_large: RGB mean 0.5)")
LAYOUTS = {layout.name: layout for layout in (OFFICIAL, NEOSR)}

_OFFICIAL_RELEASE = dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=16)
_NEOSR_PRESETS = {
    "hma": dict(embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, window_size=8),
    "hma_medium": _OFFICIAL_RELEASE,
    "hma_large": dict(embed_dim=180, depths=(6,) * 12, num_heads=(6,) * 12, window_size=24),
}


def _shapes_of(config: HMANetConfig) -> dict:
    return {name: getattr(config, name) for name in ("embed_dim", "depths", "num_heads", "window_size")}


def choose_layout(config: HMANetConfig) -> tuple[str, str]:
    """For a configuration inferred from an HMA file without gridattn's metadata: the layout to assume and the
    sentence that says so (the official and neosr files have the same keys; only the RGB mean differs)."""
    shapes = _shapes_of(config)
    neosr = [name for name, preset in _NEOSR_PRESETS.items() if preset == shapes]
    if shapes == _OFFICIAL_RELEASE:
        return "official", ("its shapes are those of the official HMA releases and of neosr's hma_medium; "
                            "assumed the official layout (DIV2K RGB mean); for a model trained with neosr pass "
                            "layout='neosr' (command line: --layout neosr)")
    if neosr:
        return "neosr", (f"its shapes match neosr's {neosr[0]} and no official release; assumed neosr's layout "
                         "(RGB mean 0.5); pass layout='official' (--layout official) for the official DIV2K mean")
    return "official", ("its shapes match no official release and no neosr preset; assumed the official layout "
                        "(DIV2K RGB mean); pass layout='neosr' (--layout neosr) for neosr's RGB mean 0.5")


def infer_config(state: Mapping[str, torch.Tensor]) -> HMANetConfig:
    """Read an official-layout state dict's hyper-parameters off its keys and shapes (official numerics).

    The grid interval leaves no trace in the weights (its position biases are MLPs over offsets); the
    official value 4 is assumed.
    """
    def need(key):
        return required(state, key, "an HMANet")

    embed_dim, in_channels = need("conv_first.weight").shape[:2]
    layer_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))})
    if not layer_ids:
        raise CheckpointError("not an HMANet checkpoint: no 'layers.N.' keys")
    depths, heads = [], []
    for i in layer_ids:
        fabs = sorted({int(m.group(1)) for k in state
                       if (m := re.match(rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.qkv\.weight$", k))})
        if not fabs:
            raise CheckpointError(f"not an HMANet checkpoint: RHTB {i} has no attention blocks")
        depths.append(len(fabs))
        heads.append(need(f"layers.{i}.residual_group.blocks.{fabs[0]}.attn.relative_position_bias_table").shape[1])
    first = f"layers.{layer_ids[0]}.residual_group"
    table_rows = need(f"{first}.blocks.1.attn.relative_position_bias_table").shape[0]
    window = (math.isqrt(table_rows) + 1) // 2
    feats = need("conv_before_upsample.0.weight").shape[0]
    scale = pixel_shuffle_scale(state, feats, SCALES)
    fc1 = need(f"{first}.blocks.1.mlp.fc1.weight")
    bias_dim = need(f"{first}.gab.grid_attn.attn_transform1.pos.pos_proj.weight").shape[0]
    return HMANetConfig(
        scale=scale,
        in_channels=int(in_channels),
        embed_dim=int(embed_dim),
        depths=tuple(depths),
        num_heads=tuple(int(h) for h in heads),
        window_size=window,
        mlp_ratio=fc1.shape[0] / embed_dim,
        qkv_bias=f"{first}.blocks.1.qkv.bias" in state,
        upsample_features=int(feats),
        grid_bias_dim=None if bias_dim == dynamic_bias_width(embed_dim // 2) else int(bias_dim),
        resi_connection="1conv" if "conv_after_body.weight" in state else "identity", numerics="official",
    )


def migrate_own_keys(state: Mapping[str, torch.Tensor], stored: Mapping) -> dict[str, torch.Tensor]:
    """gridattn's own HMANet keys as configuration versions before 2 wrote them (the reconstruction's modules at
    the top level) renamed to today's (under ``reconstruction.``)."""
    if stored.get("version", 0) >= 2:
        return dict(state)
    return {re.sub(r"^(conv_before_upsample|upsample|conv_last)\.", r"reconstruction.\1.", k): v
            for k, v in state.items()}
