"""Whether bfloat16 pays on a device, measured rather than guessed.

On CPUs with bfloat16 units (AVX512-BF16, AMX) PyTorch's bfloat16 matrix products run 2-3x faster than float32;
elsewhere they are emulated and run many times slower. The CPU's name does not say which, so
:func:`measure_matmul_rates` times a few matrix products of each dtype (well under a second) and
:func:`bfloat16_pays` decides from the ratio. Results are cached per device for the process
(:func:`~gridattn.functional.clear_caches` empties the cache).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

from .._errors import InputError
from ._cache import _CACHES

BFLOAT16_MIN_SPEEDUP = 1.5
"""bfloat16 pays where its matrix products run at least this many times the float32 rate."""


@dataclass(frozen=True)
class MatmulRates:
    """Measured matrix-product rates of one device, in GFLOP/s.

    Attributes:
        device: the device measured (``"cpu"``, ``"cuda:0"``).
        float32: rate of float32 products.
        bfloat16: rate of bfloat16 products.
    """

    device: str
    float32: float
    bfloat16: float

    @property
    def speedup(self) -> float:
        """bfloat16's rate over float32's."""
        return self.bfloat16 / self.float32


def _rate(device: torch.device, dtype: torch.dtype, size: int, seconds: float) -> float:
    """GFLOP/s of ``size``-cubed products in ``dtype``: the best of repeated runs within about ``seconds``."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.rand(size, size, device=device, generator=generator).to(dtype)
    b = torch.rand(size, size, device=device, generator=generator).to(dtype)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    for run in range(50):
        start = time.perf_counter()
        (a @ b).sum().item()  # .item() waits for the device: the product is done
        best = min(best, time.perf_counter() - start)
        if run >= 2 and time.perf_counter() > deadline:
            break
    return 2 * size**3 / best / 1e9


@functools.lru_cache(maxsize=8)
def _measure(device: str, size: int, seconds: float) -> MatmulRates:
    where = torch.device(device)
    return MatmulRates(device, _rate(where, torch.float32, size, seconds), _rate(where, torch.bfloat16, size, seconds))


_CACHES.append(_measure)


def measure_matmul_rates(device: str | torch.device = "cpu", *, size: int = 512, seconds: float = 0.1) -> MatmulRates:
    """The float32 and bfloat16 matrix-product rates of ``device`` (cached per device and arguments).

    Args:
        device: the device to measure.
        size: the products are ``size x size`` by ``size x size``.
        seconds: time spent per dtype (at least three products each).

    Example:
        >>> from gridattn.functional import measure_matmul_rates
        >>> rates = measure_matmul_rates("cpu")
        >>> rates.float32 > 0 and rates.bfloat16 > 0
        True
    """
    return _measure(str(torch.device(device)), size, seconds)


def bfloat16_pays(device: str | torch.device = "cpu") -> bool:
    """Whether bfloat16 runs faster than float32 on ``device``: on CUDA, where the card supports it; elsewhere,
    where :func:`measure_matmul_rates` finds at least :data:`BFLOAT16_MIN_SPEEDUP` times the float32 rate.

    Example:
        >>> from gridattn.functional import bfloat16_pays
        >>> isinstance(bfloat16_pays("cpu"), bool)
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return measure_matmul_rates(device).speedup >= BFLOAT16_MIN_SPEEDUP


DTYPE_CHOICES = ("auto", "float32", "bfloat16")
"""The names :func:`compute_dtype` takes (the command line's ``--dtype``)."""


def compute_dtype(choice: str | torch.dtype, device: str | torch.device, weights: torch.dtype, *,
                  auto_bfloat16: bool = True) -> torch.dtype:
    """The dtype an inference forward runs in.

    Args:
        choice: ``"auto"``, ``"float32"``, ``"bfloat16"`` or a ``torch.dtype``.
        device: where the forward runs.
        weights: the dtype of the model's weights.
        auto_bfloat16: whether ``"auto"`` may choose bfloat16 (``upscale``: yes; ``evaluate``, whose protocol is
            float32: no).

    Returns:
        ``"auto"``: bfloat16 where ``auto_bfloat16``, the weights are float32 and :func:`bfloat16_pays` on
        ``device``; the weights' dtype otherwise. A named dtype: that one. bfloat16 with float32 weights runs
        under ``torch.autocast``.

    Raises:
        InputError: an unknown name, or a dtype the weights cannot run in (only theirs, or bfloat16 for
            float32 weights).

    Example:
        >>> import torch
        >>> from gridattn.functional import compute_dtype
        >>> compute_dtype("float32", "cpu", torch.float32)
        torch.float32
    """
    if isinstance(choice, str):
        if choice not in DTYPE_CHOICES:
            raise InputError(f"dtype must be one of {DTYPE_CHOICES} or a torch.dtype, got {choice!r}")
        if choice == "auto":
            fast = auto_bfloat16 and weights == torch.float32 and bfloat16_pays(device)
            return torch.bfloat16 if fast else weights
        choice = getattr(torch, choice)
    if choice != weights and not (choice == torch.bfloat16 and weights == torch.float32):
        raise InputError(f"cannot run {str(weights).removeprefix('torch.')} weights in "
                         f"{str(choice).removeprefix('torch.')}: choose their own dtype (or bfloat16 for float32 "
                         "weights), or convert the model")
    return choice
