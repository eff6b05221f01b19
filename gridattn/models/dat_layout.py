"""DAT's weight layout (``zhengchen1999/DAT``, ``basicsr/archs/dat_arch.py``) and the configuration read off a
state dict's keys and shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from .._errors import CheckpointError
from ..blocks.datb import dat_block_shifted
from ..blocks.numerics import OFFICIAL_MASK_VALUE
from ..functional.masks import window_attention_mask
from ..functional.position import relative_offsets, relative_position_index
from .dat import DATConfig, first_block_shifted
from .layout import Layout, read_upsampler, required

RENAMES = (
    (r"^reconstruction\.", ""),
    (r"^embed_norm\.", "before_RG.1."),
    # DATB: PreNorm(AdaptiveInteraction(attention)), PreNorm(SpatialGateMlp)
    (r"\.attn\.norm\.", ".norm1."),
    (r"\.attn\.fn\.attention\.position_biases\.(\d)\.", r".attn.attns.\1.pos."),
    (r"\.attn\.fn\.attention\.", ".attn."),
    (r"\.attn\.fn\.", ".attn."),
    (r"\.ffn\.norm\.", ".norm2."),
    (r"\.ffn\.fn\.(norm|conv)\.", r".ffn.sg.\1."),
    (r"\.ffn\.fn\.", ".ffn."),
)


def _buffers(config: DATConfig) -> dict[str, torch.Tensor]:
    """Each spatial attention's ``rpe_biases`` (the offsets its bias MLP reads) and ``relative_position_index``
    per orientation, and each shifted one's ``attn_mask_0`` / ``_1`` (for ``img_size``, ``-100``)."""
    h, w = config.window_size
    buffers = {}
    for i, depth in enumerate(config.depths):
        for j in range(0, depth, 2):
            attn = f"layers.{i}.blocks.{j}.attn"
            for branch, size in enumerate(((h, w), (w, h))):
                buffers[f"{attn}.attns.{branch}.rpe_biases"] = relative_offsets(size)
                buffers[f"{attn}.attns.{branch}.relative_position_index"] = relative_position_index(size).clone()
            if dat_block_shifted(j, first_shifted=first_block_shifted(i)):
                for branch, (size, shift) in enumerate((((h, w), (h // 2, w // 2)), ((w, h), (w // 2, h // 2)))):
                    buffers[f"{attn}.attn_mask_{branch}"] = window_attention_mask(
                        config.img_size, config.img_size, size, shift, masked_value=OFFICIAL_MASK_VALUE)
    return buffers


OFFICIAL = Layout(
    "official", renames=RENAMES, buffers=_buffers,
    signature=(r"^conv_first\.weight$", r"^before_RG\.1\.weight$",
               r"^layers\.0\.blocks\.0\.attn\.attns\.0\.pos\.pos_proj\.weight$",
               r"^layers\.0\.blocks\.0\.attn\.spatial_interaction\."),
    source="zhengchen1999/DAT (DAT, DAT-S, DAT-2, DAT-light at x2/x3/x4)",
)
LAYOUTS = {"official": OFFICIAL}


def _window(state: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """The first orientation's ``(h, w)`` from its stored offsets (the first row is ``(1-h, 1-w)``): the bias MLP
    takes any window, so the weights alone do not tell it."""
    offsets = state.get("layers.0.blocks.0.attn.attns.0.rpe_biases")
    if offsets is not None:
        return int(1 - offsets[0, 0].item()), int(1 - offsets[0, 1].item())
    raise CheckpointError("cannot read DAT's window size (split_size) off this file: it has no "
                          "'layers.0.blocks.0.attn.attns.0.rpe_biases'; build the model with dat_config(...) and "
                          "load the weights into it")


def infer_config(state: Mapping[str, torch.Tensor]) -> DATConfig:
    """Read an official DAT state dict's hyper-parameters off its keys and shapes (official numerics).

    The window comes from the stored position offsets (``rpe_biases``), ``img_size`` from the stored masks
    (64 without them); ``img_range`` is not in the weights: the official 1 is assumed.
    """
    def need(key):
        return required(state, key, "a DAT")

    embed_dim, in_channels = (int(n) for n in need("conv_first.weight").shape[:2])
    layer_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))})
    depths, heads = [], []
    for i in layer_ids:
        blocks = {int(m.group(1)) for k in state if (m := re.match(rf"layers\.{i}\.blocks\.(\d+)\.norm1\.weight$", k))}
        if not blocks:
            raise CheckpointError(f"not a DAT checkpoint: residual group {i} has no blocks")
        depths.append(len(blocks))
        heads.append(2 * int(need(f"layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight").shape[0]))
    window = _window(state)
    masks = sorted(k for k in state if k.endswith(".attn.attn_mask_0"))
    img_size = math.isqrt(state[masks[0]].shape[0] * window[0] * window[1]) if masks else 64
    first = "layers.0.blocks.0"
    return DATConfig(
        in_channels=in_channels, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(heads),
        window_size=window, mlp_ratio=need(f"{first}.ffn.fc1.weight").shape[0] / embed_dim,
        qkv_bias=f"{first}.attn.qkv.bias" in state, img_size=img_size,
        resi_connection="1conv" if "conv_after_body.weight" in state else "3conv", numerics="official",
        **read_upsampler(state, in_channels),
    )
