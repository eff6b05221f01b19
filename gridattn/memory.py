"""How much memory a model's forward needs, measured by running it on the meta device.

:func:`gridattn.inference.upscale` and the command line use it to refuse, before running, an image (or tile)
whose forward cannot fit, with a tile size that does. Nothing is computed or allocated: the model of the
configuration is built on PyTorch's ``meta`` device and run there, and every tensor its operations create is
counted while it is alive. So the estimate follows the model's own code, whatever the architecture.
"""

from __future__ import annotations

import functools
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .functional._cache import _CACHES
from .models.config import ModelConfig
from .models.registry import build_model

CUDA_WORKSPACES = 96 * 2**20
"""cuBLAS / cuDNN workspaces, which come from the same allocator as the tensors on CUDA."""
MARGIN = 1.25
"""The traced peak is multiplied by this: allocator rounding and fragmentation, kernels' scratch space."""


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the storages that operations create while any tensor on them is alive; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.references: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        self.references[key] -= 1
        if not self.references[key]:
            del self.references[key]
            self.current -= self.sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key not in self.references:
                    self.references[key] = 0
                    self.sizes[key] = storage.nbytes()
                    self.current += self.sizes[key]
                    self.peak = max(self.peak, self.current)
                self.references[key] += 1
                weakref.finalize(tensor, self._release, key)
        return out


def weight_bytes(config: ModelConfig, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of a model's parameters in ``dtype`` (counted on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        count = sum(p.numel() for p in build_model(config).parameters())
    return count * dtype.itemsize


@functools.lru_cache(maxsize=256)
def _traced(config: ModelConfig, height: int, width: int, batch: int, dtype: torch.dtype) -> int:
    with torch.device("meta"):
        model = build_model(config).to(dtype).eval()
    counter = _LiveBytes()
    with torch.no_grad(), counter:
        image = torch.empty(batch, config.in_channels, height, width, dtype=dtype, device="meta")
        model(image)
    return counter.peak


_CACHES.append(_traced)


def traced_activation_bytes(config: ModelConfig, height: int, width: int, batch: int, dtype: torch.dtype) -> int:
    """Peak bytes of the tensors a no-grad eval forward creates for a ``(batch, C, height, width)`` input (the
    input included, the weights not), traced on the meta device. Cached per arguments
    (:func:`~gridattn.functional.clear_caches` empties the cache)."""
    return _traced(config, height, width, batch, dtype)


def estimate_inference_memory(
    config: ModelConfig,
    height: int,
    width: int,
    *,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    weights: int | None = None,
) -> int:
    """Bytes the first forward of a model under ``torch.no_grad()`` needs at most for ``(batch, C, height, width)``.

    The weights, plus :data:`MARGIN` times the activations' peak traced on the meta device
    (:func:`traced_activation_bytes`: the model's own operations, its padding, caches and attention blocks
    included), plus :data:`CUDA_WORKSPACES` on CUDA. An upper estimate where attention runs in fused kernels
    (the meta trace materialises the scores the math path would).

    Args:
        config: the model's configuration (any registered architecture).
        height: input height in pixels (before padding).
        width: input width in pixels.
        batch: images per forward.
        dtype: activation dtype (that of the weights, or autocast's).
        device: where the forward runs.
        weights: bytes of the model's parameters; default :func:`weight_bytes` in ``dtype``.

    Example:
        >>> from gridattn.models import hmanet_config
        >>> small = estimate_inference_memory(hmanet_config(4, "tiny"), 64, 64)
        >>> small < estimate_inference_memory(hmanet_config(4, "tiny"), 65, 64)   # padded to 72 x 64
        True
    """
    if weights is None:
        weights = weight_bytes(config, dtype)
    activations = traced_activation_bytes(config, height, width, batch, dtype)
    workspaces = CUDA_WORKSPACES if torch.device(device).type == "cuda" else 0
    return weights + int(MARGIN * activations) + workspaces
