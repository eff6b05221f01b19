"""gridattn's attention layers inside timm's Swin and MaxViT / MaxxViT models, with the models' own weights.

::

    import timm
    from gridattn.integrations.timm import convert, to_timm_state_dict

    model = timm.create_model("maxvit_tiny_tf_224", pretrained=True).eval()
    convert(model)                          # in place: every window / grid attention is now a gridattn layer
    model(torch.randn(1, 3, 256, 320))      # a size timm refuses: partitions padded, the padding masked
    state = to_timm_state_dict(model)       # timm's keys and layouts again: loads into a fresh timm model

What :func:`convert` replaces (each by a :class:`TransformerBlock` that keeps the block's own norms, MLP, layer
scales and drop paths, so their state-dict keys do not change):

* Swin V1 ``SwinTransformerBlock`` -> :class:`~gridattn.WindowAttention` with the block's effective window and
  shift (timm clips the window and drops the shift where a stage is not larger than the window).
* Swin V2 ``SwinTransformerV2Block`` -> the same, with cosine attention, query / value biases and the Swin V2
  position MLP (:class:`~gridattn.ContinuousPositionBias`, ``style="swinv2"``), in a post-norm block.
* MaxViT / MaxxViT ``PartitionAttentionCl`` -> :class:`~gridattn.WindowAttention` (block partition) or
  :class:`~gridattn.GridAttention` with ``grid_size`` (grid partition, one-stage).
* MaxxViT ``ParallelPartitionAttention`` -> both, concatenated (:class:`ParallelAttention`).

The weights move with their layouts translated (:class:`TimmLayout`): timm's ``rw`` models order the qkv rows
per head (``[q k v]`` of head 0, then head 1, ...), gridattn ``[all q | all k | all v]``; the ``tf`` models
store the position table as ``(heads, 2h-1, 2w-1)`` indexed by key minus query, gridattn as
``((2h-1)(2w-1), heads)`` indexed by query minus key; the ``rmlp`` MLP becomes a
:class:`~gridattn.ContinuousPositionBias`.

At sizes timm handles (Swin: stages that are multiples of the window; MaxViT: multiples of the partition) the
converted model computes what timm computes. At other sizes gridattn pads every partition and masks the
padding out of attention; timm's MaxViT refuses such sizes, and timm's Swin rolls before it pads, so tokens
see zero padding (and, with a shift, padding wrapped from the far edge) unmasked. The Swin patch stem is set
to pad images to a multiple of the patch (timm's ``dynamic_img_pad``).

Not converted (:class:`ConversionError`): NCHW partition attention (``PartitionAttention2d``, which no registered
timm model uses), projections without bias, prefix tokens; and ``swin_transformer_v2_cr`` (timm's own Swin V2
variant) and other architectures, which have no block :func:`convert` knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..layers import ContinuousPositionBias, GridAttention, RelativePositionBias, WindowAttention
from ..layers.position import PositionBias

__all__ = ["BiasLayout", "ConversionError", "ParallelAttention", "TransformerBlock", "TimmLayout", "convert",
           "to_timm_state_dict"]

BiasLayout = Literal["table", "table_tf", "mlp", "cpb", "none"]


class ConversionError(ValueError):
    """A timm model, or a part of it, that :func:`convert` cannot translate; the message says which and why."""


@dataclass(frozen=True)
class TimmLayout:
    """How a timm attention stores what a gridattn layer stores.

    Attributes:
        head_first: qkv rows ordered per head (``[q k v]`` of each head in turn: timm's ``rw`` models).
        bias: ``"table"`` (rows by query minus key, as gridattn), ``"table_tf"`` (``(heads, 2h-1, 2w-1)`` by key
            minus query), ``"mlp"`` (timm's ``RelPosMlp``), ``"cpb"`` (Swin V2's ``cpb_mlp``) or ``"none"``.
        bias_prefix: where timm keeps the bias inside the attention: ``""`` (Swin) or ``"rel_pos."`` (MaxViT).
    """

    head_first: bool
    bias: BiasLayout
    bias_prefix: str


class ParallelAttention(nn.Module):
    """Window and grid attention side by side on the same input, outputs concatenated (MaxxViT's parallel
    block): ``(B, H, W, C) -> (B, H, W, C_window + C_grid)``."""

    def __init__(self, attn_block: WindowAttention, attn_grid: GridAttention) -> None:
        super().__init__()
        self.attn_block, self.attn_grid = attn_block, attn_grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.attn_block(x), self.attn_grid(x)], dim=-1)


class TransformerBlock(nn.Module):
    """A timm transformer block with its attention swapped for a gridattn layer, on ``(B, H, W, C)``.

    Pre-norm (Swin V1, MaxViT): ``x + drop_path1(ls1(attn(norm1(x))))`` then
    ``x + drop_path2(ls2(mlp(norm2(x))))``. Post-norm (``post_norm=True``, Swin V2):
    ``x + drop_path1(norm1(attn(x)))`` then ``x + drop_path2(norm2(mlp(x)))``.

    The other parts are the timm block's own modules, under the same names. ``layout`` records how to give the
    attention's weights back to timm (:func:`to_timm_state_dict`).
    """

    def __init__(
        self,
        *,
        norm1: nn.Module,
        attn: nn.Module,
        norm2: nn.Module,
        mlp: nn.Module,
        layout: TimmLayout,
        post_norm: bool = False,
        ls1: nn.Module | None = None,
        ls2: nn.Module | None = None,
        drop_path1: nn.Module | None = None,
        drop_path2: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = norm1, attn, norm2, mlp
        self.ls1, self.ls2 = ls1 or nn.Identity(), ls2 or nn.Identity()
        self.drop_path1, self.drop_path2 = drop_path1 or nn.Identity(), drop_path2 or nn.Identity()
        self.layout, self.post_norm = layout, post_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            x = x + self.drop_path1(self.ls1(self.norm1(self.attn(x))))
            return x + self.drop_path2(self.ls2(self.norm2(self.mlp(x))))
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


# ---- weight layouts: each pair of functions are inverses --------------------------------------------------------

def _qkv_from_timm(weight: torch.Tensor, heads: int, layout: TimmLayout) -> torch.Tensor:
    if not layout.head_first:
        return weight
    return weight.reshape(heads, 3, -1, *weight.shape[1:]).transpose(0, 1).reshape(weight.shape)


def _qkv_to_timm(weight: torch.Tensor, heads: int, layout: TimmLayout) -> torch.Tensor:
    if not layout.head_first:
        return weight
    return weight.reshape(3, heads, -1, *weight.shape[1:]).transpose(0, 1).reshape(weight.shape)


def _table_from_tf(table: torch.Tensor) -> torch.Tensor:
    """``(heads, 2h-1, 2w-1)`` by key - query -> ``((2h-1)(2w-1), heads)`` by query - key."""
    return table.flip(1, 2).reshape(table.shape[0], -1).T.contiguous()


def _table_to_tf(table: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    h, w = window
    return table.T.reshape(-1, 2 * h - 1, 2 * w - 1).flip(1, 2).contiguous()


# timm's names of the two Linear layers of an MLP bias -> ContinuousPositionBias's
_MLP_NAMES = {"mlp": {"mlp.fc1.": "fc1.", "mlp.fc2.": "fc2."}, "cpb": {"cpb_mlp.0.": "fc1.", "cpb_mlp.2.": "fc2."}}
# weights that both sides name alike (Swin V2's temperature and query / value biases)
_SAME_NAMES = ("qkv.", "proj.", "logit_scale", "q_bias", "v_bias")


def _rename(name: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _bias_key(layer: nn.Module) -> str:
    return "relative_position_bias." if isinstance(layer, WindowAttention) else "position_biases.0."


def _state_from_timm(timm_state: dict, layer: nn.Module, layout: TimmLayout) -> dict:
    """A timm attention's state dict -> the gridattn layer's."""
    heads, state = layer.num_heads, {}
    for key, value in timm_state.items():
        if key.startswith("qkv."):
            state[key] = _qkv_from_timm(value, heads, layout)
        elif key.startswith(_SAME_NAMES):
            state[key] = value
        elif key.startswith(layout.bias_prefix) and layout.bias != "none":
            name = _rename(key[len(layout.bias_prefix):], _MLP_NAMES.get(layout.bias, {}))
            state[_bias_key(layer) + name] = _table_from_tf(value) if layout.bias == "table_tf" else value
        else:
            raise ConversionError(f"timm attention weight {key!r} has no place in {type(layer).__name__}")
    return state


def _state_to_timm(state: dict, layer: nn.Module, layout: TimmLayout) -> dict:
    """The inverse of :func:`_state_from_timm`."""
    heads, timm_state, bias_key = layer.num_heads, {}, _bias_key(layer)
    for key, value in state.items():
        if key.startswith("qkv."):
            timm_state[key] = _qkv_to_timm(value, heads, layout)
        elif key.startswith(_SAME_NAMES):
            timm_state[key] = value
        else:
            back = {new: old for old, new in _MLP_NAMES.get(layout.bias, {}).items()}
            name = _rename(key.removeprefix(bias_key), back)
            if layout.bias == "table_tf":
                window = layer.window_size if isinstance(layer, WindowAttention) else layer.grid_size
                value = _table_to_tf(value, window)
            timm_state[layout.bias_prefix + name] = value
    return timm_state


# ---- building gridattn layers from timm modules ----------------------------------------------------------------

def _layout_and_bias(
    attn: nn.Module, partition: tuple[int, int], *, head_first: bool
) -> tuple[TimmLayout, PositionBias | None]:
    """The layout of a MaxViT attention and a gridattn bias of the same kind (weights not yet copied)."""
    from timm.layers import RelPosBias, RelPosBiasTf, RelPosMlp

    rel_pos, heads = attn.rel_pos, attn.num_heads
    if getattr(rel_pos, "prefix_tokens", 0):
        raise ConversionError("position biases with prefix (class) tokens are not supported")
    if rel_pos is None:
        return TimmLayout(head_first, "none", "rel_pos."), None
    if isinstance(rel_pos, RelPosMlp):
        style = "swinv2" if rel_pos.mode == "swin" else "maxvit"
        pretrained = tuple(rel_pos.pretrained_window_size)
        bias = ContinuousPositionBias(
            heads, rel_pos.mlp.fc1.out_features, style=style,
            pretrained_window_size=(pretrained if pretrained[0] > 0 else partition) if style == "swinv2" else None,
            dropout=rel_pos.mlp.drop1.p,
        )
        return TimmLayout(head_first, "mlp", "rel_pos."), bias
    if isinstance(rel_pos, (RelPosBias, RelPosBiasTf)):
        kind = "table_tf" if isinstance(rel_pos, RelPosBiasTf) else "table"
        return TimmLayout(head_first, kind, "rel_pos."), RelativePositionBias(partition, heads)
    raise ConversionError(f"position bias {type(rel_pos).__name__} is not supported")


def _check_projections(attn: nn.Module, where: str) -> None:
    if not isinstance(attn.qkv, nn.Linear):
        raise ConversionError(f"{where}: only channels-last attention (Linear projections) is supported, "
                              f"got {type(attn.qkv).__name__}")
    if attn.proj.bias is None:
        raise ConversionError(f"{where}: an output projection without bias is not supported")


def _with_weights(layer: nn.Module, attn: nn.Module, layout: TimmLayout, bias: PositionBias | None) -> nn.Module:
    if isinstance(layer, WindowAttention):
        layer.relative_position_bias = bias
    else:
        layer.position_biases = nn.ModuleList([] if bias is None else [bias])
    weight = attn.qkv.weight
    layer.to(device=weight.device, dtype=weight.dtype)
    layer.load_state_dict(_state_from_timm(attn.state_dict(), layer, layout))
    return layer.train(attn.training)


def _maxvit_attention(
    attn: nn.Module, partition: tuple[int, int], kind: str, where: str
) -> tuple[nn.Module, TimmLayout]:
    """A gridattn layer with the weights of timm's ``AttentionCl`` on ``"block"`` or ``"grid"`` partitions."""
    _check_projections(attn, where)
    layout, bias = _layout_and_bias(attn, partition, head_first=attn.head_first)
    common = dict(in_dim=attn.qkv.in_features, head_dim=attn.dim_head, qkv_bias=attn.qkv.bias is not None,
                  position_bias="none", attn_drop=attn.attn_drop.p, proj_drop=attn.proj_drop.p)
    dim = attn.proj.out_features
    if kind == "block":
        layer = WindowAttention(dim, attn.num_heads, partition, **common)
    else:
        layer = GridAttention(dim, attn.num_heads, grid_size=partition, two_stage=False, **common)
    return _with_weights(layer, attn, layout, bias), layout


def _swin_attention(block: nn.Module, where: str, mask_value: float, *, v2: bool) -> tuple[nn.Module, TimmLayout]:
    """A WindowAttention with the weights of a Swin V1 block's attention, or a Swin V2 block's (cosine attention,
    query / value biases, the ``cpb_mlp`` position MLP)."""
    attn, window = block.attn, tuple(block.window_size)
    _check_projections(attn, where)
    if v2:
        pretrained = tuple(attn.pretrained_window_size)
        bias = ContinuousPositionBias(attn.num_heads, attn.cpb_mlp[0].out_features, style="swinv2",
                                      pretrained_window_size=pretrained if pretrained[0] > 0 else window)
        qkv = dict(qkv_bias=attn.q_bias is not None, key_bias=False, cosine=True)
    else:
        bias = RelativePositionBias(window, attn.num_heads)
        qkv = dict(qkv_bias=attn.qkv.bias is not None)
    layer = WindowAttention(
        attn.proj.out_features, attn.num_heads, window, tuple(block.shift_size), in_dim=attn.qkv.in_features,
        head_dim=attn.qkv.out_features // 3 // attn.num_heads, position_bias="none", attn_drop=attn.attn_drop.p,
        proj_drop=attn.proj_drop.p, mask_value=mask_value, **qkv,
    )
    layout = TimmLayout(head_first=False, bias="cpb" if v2 else "table", bias_prefix="")
    return _with_weights(layer, attn, layout, bias), layout


def _converted_block(module: nn.Module, where: str, mask_value: float = float("-inf")) -> TransformerBlock | None:
    """The replacement of one timm block, or ``None`` when ``module`` is not one."""
    from timm.models import maxxvit, swin_transformer, swin_transformer_v2

    if isinstance(module, maxxvit.PartitionAttention2d):
        raise ConversionError(f"{where}: NCHW partition attention (use_nchw_attn) is not supported")
    scales, post_norm = {}, False
    if isinstance(module, (swin_transformer.SwinTransformerBlock, swin_transformer_v2.SwinTransformerV2Block)):
        post_norm = isinstance(module, swin_transformer_v2.SwinTransformerV2Block)  # Swin V2 blocks are post-norm
        attn, layout = _swin_attention(module, where, mask_value, v2=post_norm)
    elif isinstance(module, maxxvit.PartitionAttentionCl):
        kind = "block" if module.partition_block else "grid"
        attn, layout = _maxvit_attention(module.attn, tuple(module.partition_size), kind, where)
        scales = dict(ls1=module.ls1, ls2=module.ls2)
    elif isinstance(module, maxxvit.ParallelPartitionAttention):
        size = tuple(module.partition_size)
        block, layout = _maxvit_attention(module.attn_block, size, "block", where + ".attn_block")
        grid, _ = _maxvit_attention(module.attn_grid, size, "grid", where + ".attn_grid")
        attn = ParallelAttention(block, grid)
        scales = dict(ls1=module.ls1, ls2=module.ls2)
    else:
        return None
    return TransformerBlock(norm1=module.norm1, attn=attn, norm2=module.norm2, mlp=module.mlp, layout=layout,
                            post_norm=post_norm, drop_path1=module.drop_path1,
                            drop_path2=module.drop_path2, **scales).train(module.training)


def convert(model: nn.Module, *, mask_value: float = float("-inf")) -> nn.Module:
    """Replace every window / grid attention block of a timm Swin (V1, V2), MaxViT or MaxxViT model by gridattn
    layers carrying the same weights; in place, and returned.

    The converted model runs at any input size (see the module's description) and equals timm's output where
    timm is correct. Its other modules, and their state-dict keys, are untouched. Either every block is
    converted or, on an error, none.

    Args:
        model: a timm model (not a single block).
        mask_value: added to the scores of masked pairs in Swin's windows (shifted-window regions and padding).
            ``-inf`` (default) masks exactly. timm's Swin adds ``-100`` between shifted-window regions, which
            masks only while scores stay well below 100: Swin V2's cosine scores reach 100 times the cosine plus
            16 when a temperature is at its cap. ``mask_value=-100.0`` reproduces timm there too.

    Raises:
        ConversionError: the model has no block to convert, or one that cannot be (named, with the reason); the
            model itself is passed as a block.
        ImportError: timm is not installed.
    """
    replacements = []
    for name, module in model.named_modules():
        block = _converted_block(module, name or type(model).__name__, mask_value)
        if block is not None:
            if not name:
                raise ConversionError(f"convert takes a model; {type(model).__name__} is a block itself")
            replacements.append((name, block))
    if not replacements:
        raise ConversionError(f"{type(model).__name__} has no Swin (V1, V2) or MaxViT / MaxxViT attention block to "
                              "convert")
    for name, block in replacements:  # only once every block converted: an error leaves the model as it was
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, block)
    for module in model.modules():  # Swin's patch stem (also inside features_only wrappers): any size, padded
        if hasattr(module, "strict_img_size") and hasattr(module, "dynamic_img_pad"):
            module.strict_img_size, module.dynamic_img_pad = False, True
    return model


def _timm_block_state(block: TransformerBlock) -> dict:
    """The attention weights of a converted block under timm's keys, relative to the block."""
    attn, layout = block.attn, block.layout
    if isinstance(attn, ParallelAttention):
        state = {}
        for name in ("attn_block", "attn_grid"):
            layer = getattr(attn, name)
            state.update({f"{name}.{k}": v for k, v in _state_to_timm(layer.state_dict(), layer, layout).items()})
        return state
    return {f"attn.{k}": v for k, v in _state_to_timm(attn.state_dict(), attn, layout).items()}


def to_timm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a :func:`convert`-ed model in timm's keys and layouts (the inverse of the conversion):
    ``timm.create_model(name).load_state_dict(to_timm_state_dict(model))`` loads it strictly."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if not isinstance(module, TransformerBlock):
            continue
        prefix = f"{name}." if name else ""
        for key in [k for k in state if k.startswith(prefix + "attn.")]:
            del state[key]
        state.update({prefix + k: v for k, v in _timm_block_state(module).items()})
    return state
