"""HMANet checkpoints in the official layout: conversion, configuration inference, strict loading.

gridattn's module tree differs from the official one in names (``embed_norm`` vs ``patch_embed.norm``),
in layout (1x1 convolutions are ``Linear`` layers here) and in GAB's query/key/value projection, which the
official code keeps as one ``Linear(dim, 3 * dim)`` and gridattn as one projection per branch (the same
rows, split). :func:`to_official_state_dict` and :func:`from_official_state_dict` convert losslessly.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import torch

from .._errors import InputError, one_line
from ..functional.position import relative_position_index
from .hmanet import HMANet, HMANetConfig

CONFIG_KEY = "gridattn_config"
STAGE_MODEL_FILE = "model.safetensors"
"""What every stage of a training run writes into its folder: the EMA weights and configuration
(:func:`save_hmanet`), the file to deploy."""
TRAINER_CHECKPOINT_FILE = "last.pt"
"""The trainer's resumable state in a stage folder: ``model``, ``ema`` (gridattn's layout), ``optimizer``, ``step``,
``rng`` and ``config`` (``config["model"]`` is :meth:`HMANetConfig.to_dict`)."""
Weights = Literal["ema", "model"]
WEIGHTS = ("ema", "model")
_GAB_QKV_PARTS = ("window_attn", "window_attn_s", "grid_attn")

# (pattern on a gridattn key, replacement giving the official key), applied in order
_RENAMES = [
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
]
_CONV_1X1 = re.compile(r"(\.se\.fc[12]|\.project)\.weight$")


def official_key(key: str) -> str:
    """The official state-dict key of a gridattn HMANet key."""
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def _gab_qkv_part(key: str) -> int | None:
    match = re.search(r"\.gab\.(window_attn|window_attn_s|grid_attn)\.qkv\.", key)
    return None if match is None else _GAB_QKV_PARTS.index(match.group(1))


def to_official_state_dict(model: HMANet) -> dict[str, torch.Tensor]:
    """The model's weights in the official layout (loadable by the official ``HMANet`` with strict=True).

    The official code then reproduces this model's outputs only for ``numerics="official"`` and
    ``image_skip=False``: it has neither the corrected GAB branch nor the bicubic image skip.
    """
    ours = model.state_dict()
    official: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, list] = {}
    for key, value in ours.items():
        target = official_key(key)
        if _CONV_1X1.search(key):
            value = value[:, :, None, None]
        part = _gab_qkv_part(key)
        if part is not None:
            qkv_parts.setdefault(target, [None] * 3)[part] = value
            continue
        official[target] = value
    for target, parts in qkv_parts.items():
        official[target] = torch.cat(parts, dim=0)
    window = model.config.window_size
    official["relative_position_index_SA"] = relative_position_index(window).clone()
    return official


class CheckpointError(InputError):
    """A checkpoint does not fit the model: the message lists missing, unexpected and mis-shaped keys."""


class _Checkpoint(NamedTuple):
    state: Mapping[str, Any]  # one set of weights
    config: Any  # the stored configuration (any form :func:`_stored_config` reads) or None
    official_layout: bool  # False: gridattn's module names (the trainer's checkpoints)


def from_official_state_dict(model: HMANet, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert an official-layout state dict to ``model``'s layout, strictly.

    Every official key must be used and every model tensor filled with the right shape; otherwise a
    :class:`CheckpointError` lists all the problems at once.
    """
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, misshaped = [], []
    row_offsets: dict[str, int] = {}
    for key, expected in ours.items():
        source = official_key(key)
        if source not in state:
            missing.append(source)
            continue
        value = state[source]
        part = _gab_qkv_part(key)
        if part is not None:  # rows of the shared projection, in branch order
            start = sum(ours[key.replace(f".{_GAB_QKV_PARTS[part]}.", f".{p}.")].shape[0]
                        for p in _GAB_QKV_PARTS[:part])
            value = value[start:start + expected.shape[0]]
            row_offsets[source] = max(row_offsets.get(source, 0), start + expected.shape[0])
        elif _CONV_1X1.search(key) and value.dim() == 4 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]
        if tuple(value.shape) != tuple(expected.shape):
            misshaped.append(
                f"{source}: checkpoint {tuple(state[source].shape)}, model expects {tuple(expected.shape)}"
            )
            continue
        converted[key] = value
        used.add(source)
    for source, rows in row_offsets.items():
        if state[source].shape[0] != rows:
            misshaped.append(f"{source}: checkpoint has {state[source].shape[0]} rows, the branches use {rows}")
    index_key = "relative_position_index_SA"
    if index_key in state:
        used.add(index_key)
        window = model.config.window_size
        if not torch.equal(state[index_key].cpu().long(), relative_position_index(window)):
            misshaped.append(f"{index_key}: not the relative-position index of window {window}")
    unexpected = sorted(set(state) - used - {s.split(":")[0] for s in misshaped})
    if missing or unexpected or misshaped:
        raise _problems("checkpoint does not match the HMANet configuration "
                        f"(scale {model.config.scale}, embed_dim {model.config.embed_dim}):",
                        {"missing": missing, "unexpected": unexpected, "mis-shaped": misshaped})
    return converted


def _unreadable(path: str, what: str, error: Exception) -> CheckpointError:
    """The error for a file that could not be read: the file, what it should have been, the cause's first line."""
    return CheckpointError(f"cannot read checkpoint {path} ({what}): {one_line(error, first=True)}")


def _read_safetensors(path: str, map_location) -> dict[str, Any]:
    """The tensors of a safetensors file, and its metadata's configuration as entry ``gridattn_config``."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise ImportError("reading .safetensors needs the safetensors package (pip install safetensors)") from None
    try:
        with safe_open(path, framework="pt", device=str(torch.device(map_location))) as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # SafetensorError for a bad header, OSError / RuntimeError for truncated data
        raise _unreadable(path, "damaged, truncated or not a checkpoint", error) from error
    if CONFIG_KEY in metadata:
        state[CONFIG_KEY] = metadata[CONFIG_KEY]
    return state


def resolve_checkpoint(path: str | os.PathLike, weights: Weights = "ema") -> str:
    """The file a checkpoint path names: a training stage folder gives its :data:`STAGE_MODEL_FILE` (EMA
    weights, the default) or its :data:`TRAINER_CHECKPOINT_FILE` (for ``weights="model"``, or when the folder
    has no model file); any other path is returned as it is.

    Raises:
        FileNotFoundError: a folder with neither file.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    names = (STAGE_MODEL_FILE, TRAINER_CHECKPOINT_FILE) if weights == "ema" else (TRAINER_CHECKPOINT_FILE,)
    for name in names:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise FileNotFoundError(f"{path} is a folder without {' or '.join(names)}: not a training stage folder")


def _read(source: str | os.PathLike | Mapping[str, Any], map_location, weights: Weights) -> _Checkpoint:
    """Read a path or mapping and pick the weights: ``params_ema`` / ``ema`` for ``weights="ema"`` (else the one
    set there is), ``params`` / ``model`` for ``weights="model"``."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if isinstance(source, (str, os.PathLike)):
        path = resolve_checkpoint(source, weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        if path.endswith(".safetensors"):
            source = _read_safetensors(path, map_location)
        else:
            try:
                # weights_only: a pickle that would build arbitrary objects (run code) is refused, not executed
                source = torch.load(path, map_location=map_location, weights_only=True)
            except Exception as error:  # unpickling refused or file damaged: say which file and why
                raise _unreadable(
                    path, "not a damage-free file of tensors loadable with weights_only=True", error
                ) from error
    if not isinstance(source, Mapping):
        raise CheckpointError(f"a checkpoint must be a dict of tensors, got {type(source).__name__}")
    if all(isinstance(source.get(key), Mapping) for key in ("model", "ema", "config")):  # gridattn's trainer
        if "model" not in source["config"]:
            raise CheckpointError("a trainer checkpoint without the model configuration (config['model'])")
        return _Checkpoint(source[weights], source["config"]["model"], official_layout=False)
    config = source.get(CONFIG_KEY)
    wrappers = ("params_ema", "params") if weights == "ema" else ("params",)
    for wrapper in wrappers:
        if isinstance(source.get(wrapper), Mapping):
            return _Checkpoint(source[wrapper], config, official_layout=True)
    if weights == "model":
        raise CheckpointError("weights='model' needs a trainer checkpoint (last.pt, a stage folder) or a file "
                              "with 'params'; this checkpoint holds one set of weights: load it with weights='ema'")
    return _Checkpoint(source, config, official_layout=True)


def _stored_config(stored: Any) -> HMANetConfig:
    """The configuration saved by :func:`save_hmanet` (:meth:`HMANetConfig.to_dict`, as a mapping, its JSON
    text, or a uint8 tensor of that text), validated."""
    if isinstance(stored, torch.Tensor) and stored.dtype == torch.uint8 and stored.dim() == 1:
        stored = bytes(stored.tolist()).decode("utf-8", errors="replace")
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{CONFIG_KEY!r} is not valid JSON ({error})") from None
    if not isinstance(stored, Mapping):
        raise CheckpointError(f"{CONFIG_KEY!r} must be a mapping of HMANetConfig fields, got {type(stored).__name__}")
    try:
        return HMANetConfig.from_dict(stored)
    except ValueError as error:
        raise CheckpointError(f"{CONFIG_KEY!r} is not a valid HMANet configuration: {error}") from None


def infer_config(state: Mapping[str, torch.Tensor]) -> HMANetConfig:
    """Read an official-layout state dict's hyper-parameters off its keys and shapes.

    The grid interval leaves no trace in the weights (its position biases are MLPs over offsets); the
    official value 4 is assumed.
    """
    def need(key):
        if key not in state:
            raise CheckpointError(f"not an HMANet checkpoint: key {key!r} is missing")
        return state[key]

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
    table_rows = need(f"layers.{layer_ids[0]}.residual_group.blocks.1.attn.relative_position_bias_table").shape[0]
    window = (math.isqrt(table_rows) + 1) // 2
    feats = need("conv_before_upsample.0.weight").shape[0]
    ups = [need(k).shape[0] // feats for k in sorted(k for k in state if re.match(r"upsample\.\d+\.weight$", k))]
    scale = {(4,): 2, (4, 4): 4, (9,): 3}.get(tuple(ups))
    if scale is None:
        raise CheckpointError(f"unsupported upsampler: convolutions with {ups} x {feats} outputs")
    fc1 = need(f"layers.{layer_ids[0]}.residual_group.blocks.1.mlp.fc1.weight")
    bias_dim = need(f"layers.{layer_ids[0]}.residual_group.gab.grid_attn.attn_transform1.pos.pos_proj.weight").shape[0]
    return HMANetConfig(
        scale=scale,
        in_channels=int(in_channels),
        embed_dim=int(embed_dim),
        depths=tuple(depths),
        num_heads=tuple(int(h) for h in heads),
        window_size=window,
        mlp_ratio=fc1.shape[0] / embed_dim,
        qkv_bias=f"layers.{layer_ids[0]}.residual_group.blocks.1.qkv.bias" in state,
        upsample_features=int(feats),
        grid_bias_dim=None if bias_dim == max(4, embed_dim // 2 // 16) else int(bias_dim),
        numerics="official",
    )


def load_hmanet(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    map_location: str | torch.device = "cpu",
    scale: int | None = None,
    weights: Weights = "ema",
) -> HMANet:
    """Build an HMANet from a checkpoint and return it in eval mode.

    Args:
        source: one of
            * a file written by :func:`save_hmanet` (``.safetensors`` or ``.pth``), such as the
              ``model.safetensors`` every training stage writes;
            * an official release or any ``torch.save`` file of an official-layout state dict, bare or wrapped
              in ``params_ema`` / ``params`` (read with ``weights_only=True``);
            * a trainer checkpoint (``last.pt``: ``model`` and ``ema`` weights with the configuration);
            * a training stage folder (``runs/tiny/x2_finetune``): its ``model.safetensors``, or its ``last.pt``
              for ``weights="model"`` or when it has no model file (:func:`resolve_checkpoint`);
            * a state dict (mapping) of any of these kinds.
        map_location: where tensors are loaded.
        scale: if given, the checkpoint must be of this scale.
        weights: where a checkpoint holds two sets of weights, ``"ema"`` (default: ``ema``, ``params_ema``)
            or ``"model"`` (the raw trained weights: ``model``, ``params``). A file with one set loads it
            for ``"ema"`` and is refused for ``"model"``.

    Official checkpoints give a model in ``"official"`` numerics with the official outputs; checkpoints written
    by :func:`save_hmanet` and by the trainer carry their configuration (numerics mode included).

    Raises:
        FileNotFoundError: no file at ``source``, or a folder without ``model.safetensors`` / ``last.pt``.
        ValueError: ``weights`` is not ``"ema"`` or ``"model"``.
        CheckpointError: a damaged or truncated file, a pickle that needs more than tensors (refused
            unexecuted), entries that are not tensors, not an HMANet, the wrong scale, missing / unexpected /
            mis-shaped keys (all listed), NaN or infinite weights, a stored configuration that is not valid.

    Example:
        >>> model = load_hmanet("HMA_SRx4.pth", scale=4)  # the released checkpoint   # doctest: +SKIP
        >>> model = load_hmanet("runs/tiny/x2_finetune")    # a training stage's EMA model  # doctest: +SKIP
    """
    try:
        model = _build(_read(source, map_location, weights))
    except CheckpointError as error:  # say which file, whatever went wrong inside it
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        if name is None or name in str(error):
            raise
        raise CheckpointError(f"{name}: {error}") from None
    if scale is not None and scale != model.config.scale:
        raise CheckpointError(f"checkpoint is a x{model.config.scale} model, but scale {scale} was requested")
    return model.to(map_location).eval()


def _build(checkpoint: _Checkpoint) -> HMANet:
    if checkpoint.official_layout:
        return hmanet_from_state_dict(checkpoint.state, checkpoint.config)
    model = HMANet(_stored_config(checkpoint.config))
    _fill(model, _own_layout(model, checkpoint.state))
    return model


def _check_tensors(state: Mapping[str, Any]) -> None:
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"checkpoint entries that are not tensors: {', '.join(not_tensors[:12])}")


def _problems(title: str, groups: dict[str, list[str]]) -> CheckpointError:
    """One error listing missing / unexpected / mis-shaped keys, at most 12 of each."""
    lines = [title]
    for name, items in groups.items():
        if items:
            lines.append(f"  {name} ({len(items)}): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else ""))
    return CheckpointError("\n".join(lines))


def _own_layout(model: HMANet, state: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """``state`` (gridattn's key names, as the trainer saves) checked against ``model``, strictly."""
    _check_tensors(state)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)}, model expects {tuple(v.shape)}"
                 for k, v in ours.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or misshaped:
        raise _problems(f"trainer checkpoint does not match its configuration (scale {model.config.scale}, "
                        f"embed_dim {model.config.embed_dim}):",
                        {"missing": missing, "unexpected": unexpected, "mis-shaped": misshaped})
    return state


def _fill(model: HMANet, weights: Mapping[str, torch.Tensor]) -> None:
    """Load ``weights`` (gridattn's layout, checked) into ``model``; NaN or infinite weights are refused."""
    broken = sorted(official_key(k) for k, v in weights.items()
                    if v.is_floating_point() and not torch.isfinite(v).all())
    if broken:  # such a model would answer every image with NaN
        raise CheckpointError(f"checkpoint has NaN or infinite weights in: {', '.join(broken[:12])}")
    model.load_state_dict(weights, strict=True)


def hmanet_from_state_dict(state: Mapping[str, Any], config: Any = None) -> HMANet:
    """Build and fill an HMANet from an official-layout state dict (already unwrapped from ``params_ema``).

    The configuration is ``config``, else a ``gridattn_config`` entry of ``state`` (a mapping, its JSON text, or
    a uint8 tensor of that text, as :func:`save_hmanet` writes into safetensors files), else read off the
    shapes by :func:`infer_config` (official numerics).

    Raises:
        CheckpointError: as :func:`load_hmanet`.
    """
    if CONFIG_KEY in state:
        config = state[CONFIG_KEY] if config is None else config
        state = {k: v for k, v in state.items() if k != CONFIG_KEY}
    _check_tensors(state)
    model = HMANet(_stored_config(config) if config is not None else infer_config(state))
    _fill(model, from_official_state_dict(model, state))
    return model.eval()


def save_hmanet(model: HMANet, path: str | os.PathLike) -> None:
    """Save ``model``'s weights in the official layout with its configuration (numerics mode included).

    A path ending in ``.safetensors`` writes a safetensors file (no pickle: safe to load from anyone) whose
    metadata holds ``gridattn_config`` (JSON of :class:`HMANetConfig`), ``numerics``, ``scale`` and
    ``gridattn_version``; the JSON is also stored as a uint8 tensor ``gridattn_config``, so that loaders
    that read only tensors (spandrel) configure the model the same way. Any other path writes a
    ``torch.save`` file ``{"params_ema": weights, "gridattn_config": config}``, which :func:`load_hmanet`
    reads with ``weights_only=True``.

    Either way the official code can load the weights (same outputs only for official numerics without
    ``image_skip``, see :func:`to_official_state_dict`).

    Example:
        >>> import os, tempfile
        >>> from gridattn.models import HMANet, hmanet_config
        >>> model = HMANet(hmanet_config(2, "tiny"))
        >>> path = os.path.join(tempfile.mkdtemp(), "hmanet_x2.safetensors")
        >>> save_hmanet(model, path)
        >>> load_hmanet(path).config == model.config
        True
    """
    if not isinstance(model, HMANet):
        raise TypeError(f"save_hmanet saves a gridattn HMANet, got {type(model).__name__}")
    config = model.config.to_dict()
    path = os.fspath(path)
    weights = to_official_state_dict(model)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        from .._version import __version__

        metadata = {CONFIG_KEY: json.dumps(config), "numerics": model.config.numerics,
                    "scale": str(model.config.scale), "gridattn_version": __version__}
        # safetensors stores each tensor once, dense: no views or shared storage
        tensors = {k: v.detach().contiguous().clone().cpu() for k, v in weights.items()}
        # the configuration also as a uint8 tensor of its JSON: loaders that keep only tensors (spandrel) keep it
        tensors[CONFIG_KEY] = torch.tensor(list(metadata[CONFIG_KEY].encode()), dtype=torch.uint8)
        save_file(tensors, path, metadata=metadata)
        return
    torch.save({"params_ema": weights, CONFIG_KEY: config}, path)
