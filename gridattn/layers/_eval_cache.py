"""A small cache for tensors that depend only on a module's (small) weights and a hashable key."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch import nn

_MAX_ENTRIES = 8


def _under_functorch(params: list[torch.Tensor]) -> bool:
    """True inside torch.func transforms (vmap, grad, ...), where weights are wrapped tensors."""
    return any(torch._C._functorch.is_functorch_wrapped_tensor(p) for p in params)


class CachedInEval(nn.Module):
    """Base for modules (position biases) whose output depends only on their weights and a key.

    In eval mode with gradients off the output is reused while the weights are unchanged. The weights are
    compared by value with a copy taken when the entry was made (they are small: a bias table or a tiny MLP),
    so every kind of update is seen: ``load_state_dict``, optimiser steps (fused ones too), in-place
    ``p.data`` edits of an EMA. Entries are keyed also by device, dtype and autocast state, at most
    ``8`` are kept (least recently used dropped), and none is pickled.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: OrderedDict[Hashable, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def _cached(self, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return compute()
        params = list(self.parameters())
        if _under_functorch(params):
            return compute()
        device = params[0].device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        key = (key, autocast)
        hit = self._cache.get(key)
        # one flat comparison: on a GPU each torch.equal waits for the device, so compare once per module
        weights = torch.cat([p.detach().reshape(-1) for p in params])
        if hit is not None and torch.equal(hit[0], weights):
            self._cache.move_to_end(key)
            return hit[1]
        # not an inference tensor (it could not be used in training later), and no autograd graph: a bias that
        # requires grad would also keep PyTorch's fused CPU attention from running
        with torch.inference_mode(False), torch.no_grad():
            value = compute()
            self._cache[key] = (weights, value)
        while len(self._cache) > _MAX_ENTRIES:
            self._cache.popitem(last=False)
        return value

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

    def __getstate__(self):
        state = super().__getstate__().copy()
        state["_cache"] = OrderedDict()
        return state
