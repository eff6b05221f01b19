"""The bias cache: position biases computed once per size and reused, while the weights are promised not to change.

A position bias depends only on its (small) weights and the group size. Inside :func:`bias_cache` (or after
``set_bias_cache(model, True)``) every position bias of ``model`` keeps its output per key, device,
dtype and autocast state, in eval mode with gradients off, and reuses it **without looking at the weights**:
checking them would make the CPU wait for the GPU in every forward. Outside, biases are computed afresh in every
forward, which is always right.

The rule: while the cache is on, do not change the weights. Loading a state dict and switching between train and
eval mode clear the cache (so do leaving :func:`bias_cache` and ``set_bias_cache(model, False)``); in-place edits
(an EMA update, ``p.data.copy_``, an optimiser step) are not seen until one of those. ``gridattn.inference.upscale``
turns the cache on for the duration of a call that runs the model more than once (tiles, self-ensemble).
"""

from __future__ import annotations

__all__ = ["bias_cache", "set_bias_cache"]

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

_MAX_ENTRIES = 8


def _under_functorch(params: list[torch.Tensor]) -> bool:
    """True inside torch.func transforms (vmap, grad, ...), where weights are wrapped tensors."""
    return any(torch._C._functorch.is_functorch_wrapped_tensor(p) for p in params)


class CachedInEval(nn.Module):
    """Base for modules (position biases) whose output depends only on their weights and a key.

    With the cache on (:func:`bias_cache`), in eval mode with gradients off, ``_cached(key, compute)`` returns
    the value stored for ``key`` (and the device, dtype and autocast state), computing it once; at most 8 entries
    are kept (least recently used dropped), none is pickled. Otherwise it computes every time.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._cache_enabled = False

    def _cached(self, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if not self._cache_enabled or self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return compute()
        params = list(self.parameters())
        if _under_functorch(params):
            return compute()
        device = params[0].device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        key = (key, autocast)
        value = self._cache.get(key)
        if value is not None:
            self._cache.move_to_end(key)
            return value
        # not an inference tensor (it could not be used in training later), and no autograd graph: a bias that
        # requires grad would also keep PyTorch's fused CPU attention from running
        with torch.inference_mode(False), torch.no_grad():
            value = compute()
        self._cache[key] = value
        while len(self._cache) > _MAX_ENTRIES:
            self._cache.popitem(last=False)
        return value

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__().copy()
        state["_cache"] = OrderedDict()
        return state


def set_bias_cache(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn the bias cache of every position bias in ``model`` on or off (either way, drop what it holds).

    While it is on, the weights must not change (see the module's description). Returns ``model``.

    Examples:
        >>> from gridattn import GridAttention
        >>> from gridattn.layers import set_bias_cache
        >>> layer = set_bias_cache(GridAttention(32, 2, interval=4).eval(), True)   # a deployed model
    """
    for module in model.modules():
        if isinstance(module, CachedInEval):
            module._cache.clear()
            module._cache_enabled = enabled
    return model


@contextmanager
def bias_cache(model: nn.Module) -> Iterator[nn.Module]:
    """Position biases of ``model`` computed once per size inside the block and reused, with no check of the
    weights (so no wait for the GPU); the weights must not change inside. The cache is dropped on exit and each
    module's previous setting restored.

    Examples:
        >>> import torch
        >>> from gridattn import GridAttention
        >>> from gridattn.layers import bias_cache
        >>> layer = GridAttention(32, 2, interval=4).eval()
        >>> with torch.no_grad(), bias_cache(layer):
        ...     y = [layer(torch.randn(1, 16, 16, 32)) for _ in range(3)]   # biases computed once
    """
    modules = [m for m in model.modules() if isinstance(m, CachedInEval)]
    before = [m._cache_enabled for m in modules]
    set_bias_cache(model, True)
    try:
        yield model
    finally:
        for module, enabled in zip(modules, before):
            module._cache.clear()
            module._cache_enabled = enabled
