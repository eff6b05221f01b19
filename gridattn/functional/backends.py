"""One attention entry point, :func:`attention`, and the choice of the kernel that runs it.

Backends (all compute ``softmax(q kᵀ · scale + bias) v``, softmax in float32 or wider):

* ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention` (the default). PyTorch picks a
  fused kernel (flash / memory-efficient / cuDNN on CUDA, flash on CPU) when the inputs allow it. On a CPU,
  where the fused kernel gives a bias no gradient, a bias that needs one (training a position bias) goes
  through gridattn's plain path with the products in the input's dtype and the softmax in float32: PyTorch
  would take its own plain path there, a third slower in bfloat16.
* ``"xformers"``: ``xformers.ops.memory_efficient_attention``; needs xformers installed and CUDA tensors.
* ``"math"``: the plain reference, written out in PyTorch; runs everywhere.

Choose per call (``backend="math"``), per layer (the layers' ``backend`` argument) or for the whole
process (:func:`set_default_backend`, or the :func:`use_backend` context manager). A backend that
cannot run the given inputs raises :class:`BackendUnavailableError` whose message says why; there is no
silent fallback.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

BACKENDS: tuple[str, ...] = ("sdpa", "xformers", "math")
"""Names of the attention backends, in the order :func:`available_backends` lists them."""
_default = "sdpa"


class BackendUnavailableError(RuntimeError):
    """A requested attention backend cannot run these inputs; the message gives the reason.

    Raised by :func:`attention` (and so by every layer's forward) instead of silently falling back to another
    backend, e.g. ``attention backend 'xformers' cannot run: xformers runs on CUDA tensors only, got device cpu``.
    A subclass of ``RuntimeError``.
    """


def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected one of {BACKENDS}")


def check_backend(name: str | None) -> None:
    """Validate a backend argument: a name from :data:`BACKENDS` or ``None`` (the default).

    The layers call this in their constructors, so a typo fails when the model is built, not at its first
    forward. Availability (device, installed packages) is checked later, per call, by :func:`attention`.

    Raises:
        ValueError: ``name`` is neither ``None`` nor one of ``"sdpa"``, ``"xformers"``, ``"math"``.
    """
    if name is not None:
        _check_name(name)


def get_default_backend() -> str:
    """The backend used when a call or layer does not name one (``"sdpa"`` unless changed).

    Returns:
        One of :data:`BACKENDS`.
    """
    return _default


def set_default_backend(name: str) -> None:
    """Set the process-wide default attention backend.

    Layers created with ``backend=None`` (the default) and calls of :func:`attention` without ``backend`` use
    it from their next call on. Prefer the :func:`use_backend` context manager for a temporary change.

    Args:
        name: ``"sdpa"``, ``"xformers"`` or ``"math"``.

    Raises:
        ValueError: unknown backend name. Availability is not checked here: a backend that cannot run an
            input raises :class:`BackendUnavailableError` when it is called.

    Examples:
        >>> import gridattn
        >>> gridattn.set_default_backend("math")
        >>> gridattn.functional.get_default_backend()
        'math'
        >>> gridattn.set_default_backend("sdpa")
    """
    global _default
    _check_name(name)
    _default = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: use ``name`` as the default backend inside the ``with`` block.

    The previous default is restored on exit, also when the block raises. The setting is process-wide
    (not per thread).

    Args:
        name: ``"sdpa"``, ``"xformers"`` or ``"math"``.

    Raises:
        ValueError: unknown backend name.

    Examples:
        >>> import torch
        >>> from gridattn import GridAttention, use_backend
        >>> layer = GridAttention(dim=32, num_heads=2, interval=4)
        >>> with use_backend("math"):  # the plain reference, e.g. to compare against the fused kernel
        ...     y = layer(torch.randn(1, 16, 16, 32))
        >>> y.shape
        torch.Size([1, 16, 16, 32])
    """
    previous = get_default_backend()
    set_default_backend(name)
    try:
        yield
    finally:
        set_default_backend(previous)


def unavailable_reason(
    name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> str | None:
    """Why backend ``name`` cannot run on ``device`` with ``dtype``, or ``None`` if it can.

    ``"sdpa"`` and ``"math"`` run everywhere. ``"xformers"`` needs the package installed, a CUDA device and
    float16, bfloat16 or float32.

    Args:
        name: a backend name.
        device: the device of the query/key/value tensors.
        dtype: their dtype.

    Returns:
        ``None``, or the reason as a sentence (the text :class:`BackendUnavailableError` would carry).

    Raises:
        ValueError: unknown backend name.
    """
    _check_name(name)
    if name != "xformers":
        return None
    if importlib.util.find_spec("xformers") is None:
        return "xformers is not installed (pip install 'gridattn[xformers]')"
    if torch.device(device).type != "cuda":
        return f"xformers runs on CUDA tensors only, got device {torch.device(device)}"
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"xformers supports float16, bfloat16 and float32, got {dtype}"
    return _xformers_extension_problem()


@functools.cache
def _xformers_extension_problem() -> str | None:
    """Why xformers' compiled kernels are missing (a wheel built for another PyTorch), or ``None``."""
    import xformers

    if getattr(xformers, "_has_cpp_library", True):
        return None
    return (f"xformers {xformers.__version__} could not load its C++/CUDA kernels (a build for another PyTorch "
            f"than {torch.__version__}; see python -m xformers.info)")


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, str | None]:
    """Every backend mapped to ``None`` (can run) or the reason it cannot, for ``device`` and ``dtype``.

    Args:
        device: the device to check for.
        dtype: the dtype to check for.

    Examples:
        >>> from gridattn import available_backends
        >>> available_backends("cpu")["math"] is None
        True
        >>> available_backends("cpu")["xformers"] is None  # xformers needs CUDA
        False
    """
    return {name: unavailable_reason(name, device, dtype) for name in BACKENDS}


def bias_for_kernel(bias: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor | None:
    """``bias`` in ``q``'s dtype, as the fused kernels take it, unless it is being trained.

    Cast a ``(heads, N, N)`` position bias with this *before* masks broadcast it over windows or groups: the sum
    is then built in the kernel's dtype (bfloat16 under autocast) instead of in float32 and converted. A bias that
    needs a gradient is left as it is: on a CPU it takes the plain path (:func:`attention`), whose softmax adds it
    in float32.
    """
    if bias is None or bias.requires_grad:
        return bias
    return bias.to(q.dtype)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> None:
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(
            f"q, k, v must have the same rank >= 2, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            "q, k, v must have the same leading (batch, head) dims, "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head width, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of tokens, got {k.shape[-2]} and {v.shape[-2]}")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if bias is not None:
        target = (*q.shape[:-2], q.shape[-2], k.shape[-2])
        # by hand: torch.broadcast_shapes imports ~500 modules (32 MiB) on first use
        if bias.dim() > len(target) or any(b not in (1, t) for b, t in zip(bias.shape[::-1], target[::-1])):
            raise ValueError(f"bias of shape {tuple(bias.shape)} does not broadcast to the scores {target}")
        if bias.dtype == torch.bool:
            raise ValueError("bias must be additive (float); turn a boolean mask into 0 / -inf first")


def _math(q, k, v, bias, scale, dropout_p, products_in_input_dtype=False):
    compute = torch.promote_types(q.dtype, torch.float32)  # softmax never in half precision
    if products_in_input_dtype:  # the products at the input's (bfloat16) rate, their sum in float32
        scores = torch.matmul(q, k.transpose(-2, -1)).to(compute) * scale
    else:
        scores = torch.matmul(q.to(compute), k.to(compute).transpose(-2, -1)) * scale
    if bias is not None:
        scores = scores + bias.to(compute)
    weights = torch.softmax(scores, dim=-1)
    if dropout_p:
        weights = F.dropout(weights, p=dropout_p)
    return torch.matmul(weights.to(v.dtype), v)


def _as_4d(q, k, v, bias):
    """View ``(*lead, N, d)`` inputs as 4-D so fused kernels apply and the bias broadcasts without copies.

    The leading dims are split in two: those where the bias has size 1 (folded into the kernel's batch)
    and the rest (folded into its head axis, where the bias is stored).
    """
    lead = q.shape[:-2]
    bias = None if bias is None else bias.reshape((1,) * (q.dim() - bias.dim()) + tuple(bias.shape))
    split = len(lead)
    if bias is not None:
        split = 0
        while split < len(lead) and bias.shape[split] == 1:
            split += 1
    outer, inner = math.prod(lead[:split]), math.prod(lead[split:])
    q, k, v = (t.reshape(outer, inner, *t.shape[-2:]) for t in (q, k, v))
    if bias is not None:
        bias = bias.expand(*bias.shape[:split], *lead[split:], *bias.shape[-2:]).reshape(1, inner, *bias.shape[-2:])
    return q, k, v, bias


def _pad_width(t: torch.Tensor, multiple: int) -> torch.Tensor:
    extra = -t.shape[-1] % multiple
    return F.pad(t, (0, extra)) if extra else t


def _sdpa(q, k, v, bias, scale, dropout_p):
    if bias is not None and bias.requires_grad and not q.is_cuda and torch.is_grad_enabled():
        # PyTorch's fused CPU kernels give no gradient to a bias, so SDPA falls back to its math path there, whose
        # safe softmax (where / isneginf / all over the scores) makes a bfloat16 step 1.3x slower than this one
        return _math(q, k, v, bias, scale, dropout_p, products_in_input_dtype=True)
    lead, value_width = q.shape[:-2], v.shape[-1]
    # the kernels take the bias in q's dtype: cast it before _as_4d may expand it over heads or groups
    q4, k4, v4, bias4 = _as_4d(q, k, v, None if bias is None else bias.to(q.dtype))
    if q.is_cuda:
        # CUDA's fused kernels need head widths that are multiples of 8 (HMANet's are 15 and 30); without
        # them PyTorch falls back to the unfused path. Zero columns add nothing to q.k or to the output.
        q4, k4, v4 = (_pad_width(t, 8) for t in (q4, k4, v4))
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=bias4, dropout_p=dropout_p, scale=scale)
    return out[..., :value_width].reshape(*lead, out.shape[-2], value_width)


def _xformers(q, k, v, bias, scale, dropout_p):
    import xformers.ops as xops

    lead = q.shape[:-2]
    q4, k4, v4, bias4 = _as_4d(q, k, v, bias)
    if bias4 is not None:
        n_q, n_k = bias4.shape[-2:]
        # xformers wants a full (B, heads, Nq, Nk) bias whose last dim is stored with a stride that is a
        # multiple of 8: allocate aligned storage and view the used part.
        storage = torch.empty(*bias4.shape[:-1], -(-n_k // 8) * 8, dtype=q.dtype, device=q.device)
        storage[..., :n_k] = bias4
        bias4 = storage[..., :n_k].expand(q4.shape[0], -1, -1, -1)
    out = xops.memory_efficient_attention(
        q4.transpose(1, 2), k4.transpose(1, 2), v4.transpose(1, 2), attn_bias=bias4, p=dropout_p, scale=scale
    )
    out = out.transpose(1, 2)
    return out.reshape(*lead, *out.shape[-2:])


_KERNELS = {"sdpa": _sdpa, "xformers": _xformers, "math": _math}


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention ``softmax(q kᵀ · scale + bias) v`` on the chosen backend.

    Args:
        q: ``(*batch, N_q, d)``, any number of leading dims (typically ``(B, heads, N, d)`` or
            ``(B, groups, heads, N, d)``).
        k: ``(*batch, N_k, d)``.
        v: ``(*batch, N_k, d_v)``.
        bias: optional additive bias broadcastable to ``(*batch, N_q, N_k)``: a position bias, a mask
            (``-inf`` where attention is not allowed) or their sum. Gradients flow into it.
        scale: defaults to ``d ** -0.5``.
        dropout_p: dropout on the attention weights (only pass a non-zero value in training).
        backend: ``"sdpa"``, ``"xformers"``, ``"math"`` or ``None`` for :func:`get_default_backend`.

    Returns:
        ``(*batch, N_q, d_v)`` in the dtype of ``q``.

    Raises:
        ValueError: inconsistent shapes or dtypes (the message gives all three shapes), a boolean ``bias``, a
            bias that does not broadcast to the scores, or an unknown backend name.
        BackendUnavailableError: the backend cannot run these inputs (the message says why).

    Examples:
        >>> import torch
        >>> from gridattn.functional import attention
        >>> q = k = v = torch.randn(2, 4, 64, 16)           # (B, heads, N, d)
        >>> bias = torch.zeros(4, 64, 64)                    # (heads, N, N), broadcast over the batch
        >>> attention(q, k, v, bias).shape
        torch.Size([2, 4, 64, 16])
        >>> out = attention(q, k, v, bias, backend="math")  # the plain reference
    """
    name = get_default_backend() if backend is None else backend
    _check_name(name)
    _check_inputs(q, k, v, bias)
    reason = unavailable_reason(name, q.device, q.dtype)
    if reason is not None:
        raise BackendUnavailableError(f"attention backend {name!r} cannot run: {reason}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return _KERNELS[name](q, k, v, bias, scale, dropout_p)
