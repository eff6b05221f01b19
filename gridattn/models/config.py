"""The one encoding of a model configuration, shared by every architecture.

Every architecture's configuration is a frozen dataclass deriving from :class:`ModelConfig`. Checkpoints
(``.pth``, ``.safetensors``), trainer checkpoints and ONNX metadata store :meth:`ModelConfig.to_dict`, and
:func:`gridattn.models.config_from_dict` reads any of them back into the right class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

_C = TypeVar("_C", bound="ModelConfig")

SR_SCALES = (1, 2, 3, 4, 8)
"""Every upscaling factor some architecture supports (1: restoration at the input size)."""
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
"""RGB mean of DIV2K, subtracted from inputs and added back to outputs by the official SR models."""


class ModelConfig:
    """Base of the architectures' configuration dataclasses (frozen; subclasses are ``@dataclass(frozen=True)``).

    A subclass names its architecture in ``arch`` and its encoding's version in ``version``, and has the
    fields ``scale`` and ``in_channels`` and the property ``pad_multiple`` (tiles are aligned to it).
    """

    arch: ClassVar[str]
    """The architecture's name in the registry (``"hmanet"``, ``"swinir"``, ``"hat"``)."""
    version: ClassVar[int]
    """Version of the encoding written by :meth:`to_dict`."""
    scale: int
    in_channels: int

    @property
    def pad_multiple(self) -> int:
        """Height and width that the attention tiles exactly (tiles of :func:`~gridattn.inference.upscale`
        are multiples of it)."""
        raise NotImplementedError

    def replace(self: _C, **changes: Any) -> _C:
        """A copy with ``changes`` applied (``dataclasses.replace``), validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values (tuples as lists) with ``"arch"`` and ``"version"``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        encoded = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return {"arch": self.arch, "version": self.version, **encoded}

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        """The configuration encoded by :meth:`to_dict`.

        Raises:
            TypeError: ``data`` is not a mapping.
            ValueError: another architecture, a version newer than this gridattn reads, unknown fields, or
                values that are not a valid configuration.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a {cls.__name__} must be a mapping of its fields, got {type(data).__name__}")
        arch = data.get("arch", cls.arch)
        if arch != cls.arch:
            raise ValueError(f"a configuration of architecture {arch!r}, not {cls.arch!r}")
        version = data.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= cls.version:
            raise ValueError(f"configuration version {version!r} is not one this gridattn reads (0 to "
                             f"{cls.version}): written by a newer gridattn?")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"version", "arch"})
        if unknown:
            raise ValueError(f"unknown fields {unknown} (written by a newer gridattn?)")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k not in ("version", "arch")}
        try:
            return cls(**values)
        except TypeError as error:
            raise ValueError(f"fields of the wrong type ({error})") from None


def check_scale(scale: int, supported: tuple[int, ...], what: str) -> None:
    """``scale`` must be one of ``supported`` (``what``: the model or upsampler that needs it)."""
    if scale not in supported:
        raise ValueError(f"{what} supports scales {supported}, got {scale}")
