"""Reading and writing model files: :func:`load_model` reads every supported file of every registered
architecture, :func:`save_model` writes gridattn's format.

Files read:
* gridattn's own (:func:`save_model`): the weights in the architecture's official layout, with the
  configuration (:meth:`~gridattn.models.config.ModelConfig.to_dict`) in the safetensors metadata and as a
  uint8 tensor ``gridattn_config`` (``.safetensors``), or beside ``params_ema`` (``.pth``);
* the official releases and other trainers' files (bare, ``params_ema`` / ``params``): the architecture is
  detected from the keys (each layout's signature) and its configuration read off the shapes;
* a training run's stage folder or its resumable ``last.pt`` (weight sets ``model`` and ``ema`` in gridattn's
  module names, ``config["model"]`` the configuration; written by :mod:`gridattn.train`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from .._errors import CheckpointError, LayoutAssumedWarning, one_line
from .config import ModelConfig
from .layout import Layout, describe, from_layout, problems, to_layout
from .registry import Architecture, architecture_of, architectures, build_model, config_from_dict, get_architecture

CONFIG_KEY = "gridattn_config"
STAGE_MODEL_FILE = "model.safetensors"
"""What every stage of a training run writes into its folder: the EMA weights and configuration
(:func:`save_model`), the file to deploy."""
TRAINER_CHECKPOINT_FILE = "last.pt"
"""The trainer's resumable state in a stage folder: ``model``, ``ema`` (gridattn's module names),
``optimizer``, ``step``, ``rng`` and ``config`` (``config["model"]`` is the model's configuration)."""
Weights = Literal["ema", "model"]
WEIGHTS = ("ema", "model")


class StoredWeights(NamedTuple):
    """One set of weights read from a file, before a model is built."""

    state: Mapping[str, Any]
    config: Any  # the stored configuration (a mapping, its JSON text or a uint8 tensor of it), or None
    official_layout: bool  # False: gridattn's module names (the trainer's checkpoints)


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


def read_weights(source: str | os.PathLike | Mapping[str, Any], *, map_location: str | torch.device = "cpu",
                 weights: Weights = "ema") -> StoredWeights:
    """Read a path or mapping and pick one set of weights: ``params_ema`` / ``ema`` for ``weights="ema"`` (else
    the one set there is), ``params`` / ``model`` for ``weights="model"``.

    Raises:
        FileNotFoundError, ValueError, CheckpointError: as :func:`load_model`.
    """
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
        return StoredWeights(source[weights], source["config"]["model"], official_layout=False)
    config = source.get(CONFIG_KEY)
    wrappers = ("params_ema", "params") if weights == "ema" else ("params",)
    for wrapper in wrappers:
        if isinstance(source.get(wrapper), Mapping):
            return StoredWeights(source[wrapper], config, official_layout=True)
    if weights == "model":
        raise CheckpointError("weights='model' needs a trainer checkpoint (last.pt, a stage folder) or a file "
                              "with 'params'; this checkpoint holds one set of weights: load it with weights='ema'")
    state = {k: v for k, v in source.items() if k != CONFIG_KEY}
    return StoredWeights(state, config, official_layout=True)


def stored_config(stored: Any) -> ModelConfig:
    """The configuration saved by :func:`save_model` (:meth:`~gridattn.models.config.ModelConfig.to_dict`, as a
    mapping, its JSON text, or a uint8 tensor of that text), validated."""
    if isinstance(stored, torch.Tensor) and stored.dtype == torch.uint8 and stored.dim() == 1:
        stored = bytes(stored.tolist()).decode("utf-8", errors="replace")
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{CONFIG_KEY!r} is not valid JSON ({error})") from None
    if not isinstance(stored, Mapping):
        raise CheckpointError(f"{CONFIG_KEY!r} must be a mapping of configuration fields, got {type(stored).__name__}")
    try:
        return config_from_dict(stored)
    except ValueError as error:
        name = stored.get("arch", "hmanet")
        title = architectures()[name].title if name in architectures() else "model"
        raise CheckpointError(f"{CONFIG_KEY!r} is not a valid {title} configuration: {error}") from None


def check_tensors(state: Mapping[str, Any]) -> None:
    """Every entry must be a tensor, else a :class:`~gridattn.models.CheckpointError` names the others."""
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"checkpoint entries that are not tensors: {', '.join(not_tensors[:12])}")


def detect_architecture(state: Mapping[str, Any]) -> Architecture:
    """The registered architecture whose official layouts' signatures the keys of ``state`` match.

    Raises:
        CheckpointError: none matches, or several do (the message names them).
    """
    found = [arch for arch in architectures().values() if any(lay.matches(state) for lay in arch.layouts.values())]
    if not found:
        raise CheckpointError(f"not a checkpoint of a registered architecture ({', '.join(architectures())}): "
                              f"its keys match none of their official layouts")
    if len(found) > 1:
        raise CheckpointError(f"the keys fit several architectures ({', '.join(a.name for a in found)}): pass arch=")
    return found[0]


def _own_layout(model: nn.Module, state: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """``state`` (gridattn's key names, as the trainer saves) checked against ``model``, strictly."""
    check_tensors(state)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)}, model expects {tuple(v.shape)}"
                 for k, v in ours.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or misshaped:
        raise problems(f"trainer checkpoint does not match its configuration ({describe(model.config)}):",
                       {"missing": missing, "unexpected": unexpected, "mis-shaped": misshaped})
    return state


def fill(model: nn.Module, weights: Mapping[str, torch.Tensor], name=lambda key: key) -> None:
    """Load ``weights`` (gridattn's layout, checked) into ``model``; NaN or infinite weights are refused (named
    by ``name(key)``: the file's key)."""
    broken = sorted(name(k) for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if broken:  # such a model would answer every image with NaN
        raise CheckpointError(f"checkpoint has NaN or infinite weights in: {', '.join(broken[:12])}")
    model.load_state_dict(weights, strict=True)


def _layout_for(arch: Architecture, config: ModelConfig | None, state: Mapping[str, Any],
                layout: str | None) -> tuple[ModelConfig, Layout]:
    """The configuration and layout of an official-layout state dict (``config``: stored with it, or None)."""
    if config is not None:  # gridattn's file: the configuration says everything; a layout asked for must agree
        chosen = arch.layout(layout)
        conflicts = {k: v for k, v in chosen.config_changes.items() if getattr(config, k) != tuple(v)}
        if conflicts:
            raise CheckpointError(f"the file's stored configuration disagrees with the {chosen.name} layout in "
                                  f"{', '.join(conflicts)}: leave layout unset for gridattn's files")
        return config, chosen
    inferred = arch.infer_config(state)
    if layout is None and arch.choose_layout is not None:
        layout, note = arch.choose_layout(inferred)
        warnings.warn(f"{arch.title} checkpoint without gridattn's configuration: {note}", LayoutAssumedWarning,
                      stacklevel=4)
    chosen = arch.layout(layout)
    return inferred.replace(**chosen.config_changes), chosen


def model_from_weights(stored: StoredWeights, *, layout: str | None = None, arch: str | None = None) -> nn.Module:
    """Build and fill the model that ``stored`` describes (eval mode).

    Raises:
        CheckpointError: as :func:`load_model`.
        ValueError: an unknown ``arch`` or ``layout``.
    """
    if not stored.official_layout:
        config = stored_config(stored.config)
        model = build_model(config)
        migrate = get_architecture(config.arch).migrate_own_keys
        fill(model, _own_layout(model, migrate(stored.state, stored.config) if migrate else stored.state))
        return model.eval()
    state = stored.state
    check_tensors(state)
    config = stored_config(stored.config) if stored.config is not None else None
    architecture = get_architecture(arch) if arch is not None else (
        get_architecture(config.arch) if config is not None else detect_architecture(state))
    if config is not None and config.arch != architecture.name:
        raise CheckpointError(f"the file stores a {config.arch} configuration, not {architecture.name}")
    config, chosen = _layout_for(architecture, config, state, layout)
    model = build_model(config)
    fill(model, from_layout(model, state, chosen), chosen.key)
    return model.eval()


def load_model(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    layout: str | None = None,
    weights: Weights = "ema",
    map_location: str | torch.device = "cpu",
    scale: int | None = None,
    arch: str | None = None,
) -> nn.Module:
    """Build a model of any registered architecture from a file and return it in eval mode.

    Args:
        source: one of
            * a file written by :func:`save_model` (``.safetensors`` or ``.pth``), such as the
              ``model.safetensors`` every training stage writes;
            * an official release or any ``torch.save`` file of an official-layout state dict, bare or wrapped
              in ``params_ema`` / ``params`` (read with ``weights_only=True``), of HMANet, SwinIR or HAT;
              neosr's HMA files (``layout="neosr"``);
            * a trainer checkpoint (``last.pt``: ``model`` and ``ema`` weights with the configuration);
            * a training stage folder (``runs/tiny/x2_finetune``): its ``model.safetensors``, or its ``last.pt``
              for ``weights="model"`` or when it has no model file (:func:`resolve_checkpoint`);
            * a state dict (mapping) of any of these kinds.
        layout: the layout of a file without gridattn's configuration (``"official"``, or ``"neosr"`` for
            HMANet). Unset, the architecture's files that could be read two ways are read one way with a
            :class:`~gridattn.models.LayoutAssumedWarning` that says which and how to choose the other.
        weights: where a checkpoint holds two sets of weights, ``"ema"`` (default: ``ema``, ``params_ema``)
            or ``"model"`` (the raw trained weights: ``model``, ``params``). A file with one set loads it
            for ``"ema"`` and is refused for ``"model"``.
        map_location: where tensors are loaded.
        scale: if given, the checkpoint must be of this scale.
        arch: if given, the architecture the file must be (else detected from its keys or stored configuration).

    Official files give a model in ``"official"`` numerics with the official outputs; files written by
    :func:`save_model` and by the trainer carry their configuration (numerics mode included).

    Raises:
        FileNotFoundError: no file at ``source``, or a folder without ``model.safetensors`` / ``last.pt``.
        ValueError: ``weights`` not ``"ema"`` / ``"model"``, an unknown ``layout`` or ``arch``.
        CheckpointError: a damaged or truncated file, a pickle that needs more than tensors (refused
            unexecuted), entries that are not tensors, keys of no registered architecture, the wrong scale,
            missing / unexpected / mis-shaped keys (all listed), NaN or infinite weights, a stored configuration
            that is not valid.

    Example:
        >>> model = load_model("SwinIR-M_x4.pth")                       # an official release  # doctest: +SKIP
        >>> model = load_model("4x_hma.pth", layout="neosr")            # trained with neosr   # doctest: +SKIP
        >>> model = load_model("runs/tiny/x2_finetune")                 # a training stage     # doctest: +SKIP
    """
    try:
        model = model_from_weights(read_weights(source, map_location=map_location, weights=weights),
                                   layout=layout, arch=arch)
    except CheckpointError as error:  # say which file, whatever went wrong inside it
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        if name is None or name in str(error):
            raise
        raise CheckpointError(f"{name}: {error}") from None
    if scale is not None and scale != model.config.scale:
        raise CheckpointError(f"checkpoint is a x{model.config.scale} model, but scale {scale} was requested")
    return model.to(map_location).eval()


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Save a gridattn model's weights in its architecture's official layout with its configuration.

    A path ending in ``.safetensors`` writes a safetensors file (no pickle: safe to load from anyone) whose
    metadata holds ``gridattn_config`` (JSON of the configuration), ``arch``, ``numerics``, ``scale`` and
    ``gridattn_version``; the JSON is also stored as a uint8 tensor ``gridattn_config``, so that loaders
    that read only tensors (spandrel) configure the model the same way. Any other path writes a
    ``torch.save`` file ``{"params_ema": weights, "gridattn_config": config}``, which :func:`load_model`
    reads with ``weights_only=True``.

    Either way the official code can load the weights (same outputs in official numerics without
    ``image_skip``).

    Raises:
        TypeError: not a model of a registered architecture.

    Example:
        >>> import os, tempfile
        >>> from gridattn.models import HMANet, hmanet_config, load_model, save_model
        >>> model = HMANet(hmanet_config(2, "tiny"))
        >>> path = os.path.join(tempfile.mkdtemp(), "hmanet_x2.safetensors")
        >>> save_model(model, path)
        >>> load_model(path).config == model.config
        True
    """
    arch = architecture_of(model)
    config = model.config.to_dict()
    path = os.fspath(path)
    weights = to_layout(model, arch.layout(None))
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        from .._version import __version__

        metadata = {CONFIG_KEY: json.dumps(config), "arch": arch.name, "numerics": model.config.numerics,
                    "scale": str(model.config.scale), "gridattn_version": __version__}
        # safetensors stores each tensor once, dense: no views or shared storage
        tensors = {k: v.detach().contiguous().clone().cpu() for k, v in weights.items()}
        # the configuration also as a uint8 tensor of its JSON: loaders that keep only tensors (spandrel) keep it
        tensors[CONFIG_KEY] = torch.tensor(list(metadata[CONFIG_KEY].encode()), dtype=torch.uint8)
        save_file(tensors, path, metadata=metadata)
        return
    torch.save({"params_ema": weights, CONFIG_KEY: config}, path)
