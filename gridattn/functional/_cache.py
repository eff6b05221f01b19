"""A cache for the size-dependent tensors of the functional ops (masks, relative-position indices)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)
_CACHES: list = []  # every cache made by cached_tensor, for clear_caches


def clear_caches() -> None:
    """Empty the caches of the functional ops (shift and padding masks, relative-position indices) and of the
    memory estimate's meta traces; they fill again on the next call. Frees the memory they hold, e.g. on a GPU
    after inference at many sizes.

    Example:
        >>> from gridattn.functional import clear_caches, window_attention_mask
        >>> mask = window_attention_mask(10, 10, 8, 4)
        >>> clear_caches()
        >>> window_attention_mask(10, 10, 8, 4) is mask               # built anew
        False
    """
    for cache in _CACHES:
        cache.cache_clear()


def cached_tensor(maxsize: int = 16) -> Callable[[F], F]:
    """Decorator: remember the last ``maxsize`` results (least recently used dropped) of a function of hashable
    sizes, devices and dtypes (:func:`clear_caches` empties every such cache). The result is built outside
    inference mode, so it stays usable by autograd after a first call under ``torch.inference_mode``; while
    ``torch.compile`` traces, the function runs uncached, so its operations go into the graph."""

    def decorate(function: F) -> F:
        build = torch.inference_mode(False)(function)
        cached = functools.lru_cache(maxsize=maxsize)(build)
        _CACHES.append(cached)

        @functools.wraps(function)
        def call(*args):
            return build(*args) if torch.compiler.is_compiling() else cached(*args)

        return call  # type: ignore[return-value]

    return decorate
