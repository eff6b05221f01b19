"""The architectures gridattn builds, by name: one entry per model family, read by every consumer
(:func:`~gridattn.models.load_model`, :func:`~gridattn.models.save_model`, the command line, the trainer).

The built-in architectures are registered when :mod:`gridattn.models` is imported (``_builtin.py``). An
:class:`Architecture` holds the configuration class, the model class, the presets, the official weight
layouts and how to read a configuration off an official state dict. Consumers never ask which model they hold:
they read ``model.config`` (``scale``, ``in_channels``, ``pad_multiple``) and look the rest up here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._errors import InputError
from .config import ModelConfig
from .layout import Layout


@dataclass(frozen=True)
class Architecture:
    """One model family.

    Attributes:
        name: its name in the registry and in stored configurations (``"hmanet"``).
        title: how papers write it (``"HMANet"``).
        config_class: its frozen configuration dataclass.
        model_class: ``model_class(config)`` builds the model.
        presets: preset name -> ``preset(scale)`` giving a configuration (``"tiny"`` trains on a CPU in minutes).
        layouts: the official weight layouts by name; the first is the default.
        infer_config: an official-layout state dict -> its configuration (official numerics).
        choose_layout: for a configuration inferred from a file without gridattn's metadata, the layout to
            assume and a sentence saying so, or ``None`` when only one layout fits.
        scale_specific: prefixes of gridattn keys that depend on the scale (not transferred between scales).
        flagship: the preset of the paper's main model (what the staged recipe trains at full size).
        migrate_own_keys: ``(state, stored configuration dict) -> state`` renaming gridattn's own keys written
            by older versions (trainer checkpoints), or ``None``.
    """

    name: str
    title: str
    config_class: type[ModelConfig]
    model_class: type[nn.Module]
    presets: Mapping[str, Callable[[int], ModelConfig]]
    layouts: Mapping[str, Layout]
    infer_config: Callable[[Mapping[str, torch.Tensor]], ModelConfig]
    choose_layout: Callable[[ModelConfig], tuple[str, str]] | None = None
    flagship: str = "official"
    scale_specific: tuple[str, ...] = ("reconstruction.upsample.",)
    migrate_own_keys: Callable[[Mapping[str, Any], Any], Mapping[str, Any]] | None = None

    def preset(self, name: str, scale: int, **changes: Any) -> ModelConfig:
        """The configuration of preset ``name`` at ``scale``, with ``changes`` applied.

        Raises:
            ValueError: an unknown preset, or a scale or change the architecture does not support.
        """
        if name not in self.presets:
            raise InputError(f"unknown {self.title} preset {name!r}; expected one of {sorted(self.presets)}")
        return self.presets[name](scale).replace(**changes)

    def layout(self, name: str | None) -> Layout:
        """The layout ``name`` (``None``: the default).

        Raises:
            ValueError: a layout this architecture does not have.
        """
        if name is None:
            return next(iter(self.layouts.values()))
        if name not in self.layouts:
            raise InputError(f"{self.title} has no layout {name!r}; its layouts: {', '.join(self.layouts)}")
        return self.layouts[name]


_REGISTRY: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add ``architecture`` to the registry (by its name; registering a name again replaces it)."""
    _REGISTRY[architecture.name] = architecture
    return architecture


def architectures() -> dict[str, Architecture]:
    """The registered architectures by name, in registration order."""
    return dict(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    """The architecture registered as ``name``.

    Raises:
        ValueError: no such architecture (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        raise InputError(f"unknown architecture {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def architecture_of(model: nn.Module) -> Architecture:
    """The registered architecture of a model built by gridattn (read off ``model.config``).

    Raises:
        TypeError: not a model of a registered architecture.
    """
    config = getattr(model, "config", None)
    arch = getattr(config, "arch", None)
    if not isinstance(config, ModelConfig) or arch is None:
        raise TypeError(f"not a gridattn model (one of {', '.join(architectures())}): {type(model).__name__}")
    return get_architecture(arch)


def config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """A configuration encoded by :meth:`ModelConfig.to_dict`, of the architecture it names (``"arch"``;
    without it, HMANet: what gridattn 0.1 and 0.2 wrote).

    Raises:
        TypeError: ``data`` is not a mapping.
        ValueError: an unknown architecture, or not a valid configuration of it.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"a model configuration must be a mapping of its fields, got {type(data).__name__}")
    return get_architecture(data.get("arch", "hmanet")).config_class.from_dict(data)


def build_model(config: ModelConfig) -> nn.Module:
    """The model of a configuration (randomly initialised, train mode)."""
    return get_architecture(config.arch).model_class(config)


