"""A cache for the size-dependent tensors of the functional ops (masks, relative-position indices)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def cached_tensor(maxsize: int = 16) -> Callable[[F], F]:
    """Decorator: remember the last ``maxsize`` results (least recently used dropped) of a function of hashable
    sizes, devices and dtypes. The result is built outside inference mode, so it stays usable by autograd after
    a first call under ``torch.inference_mode``; while ``torch.compile`` traces, the function runs uncached, so
    its operations go into the graph."""

    def decorate(function: F) -> F:
        build = torch.inference_mode(False)(function)
        cached = functools.lru_cache(maxsize=maxsize)(build)

        @functools.wraps(function)
        def call(*args):
            return build(*args) if torch.compiler.is_compiling() else cached(*args)

        return call  # type: ignore[return-value]

    return decorate
