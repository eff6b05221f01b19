"""Memory-bounded attention: the additive bias (position bias plus mask) is built one block at a time.

The fused kernels take one dense bias of the scores' shape. On large maps that bias (windows x heads x N x N,
or heads x N x N for a grid group of thousands of tokens) would dominate memory, so the layers attend in
blocks whose bias has at most :data:`MAX_SCORES` entries; the result is the same as one call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from .backends import attention

MAX_SCORES = 2**24
"""Default bound on the bias entries built at once (64 MiB in float32), used by every attention layer."""


def block_length(max_scores: int, entries_per_item: int) -> int:
    """How many items (windows, groups or queries) of ``entries_per_item`` bias entries fit in ``max_scores``
    (at least one)."""
    return max(1, max_scores // entries_per_item)


def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: Callable[[int, int], torch.Tensor],
    *,
    axis: Literal["groups", "queries"],
    block: int,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str | None = None,
) -> torch.Tensor:
    """:func:`~gridattn.functional.attention` in blocks of ``block`` along ``axis``, each with its own bias.

    Args:
        q: queries ``(B, groups, heads, N, d)``.
        k: keys ``(B, groups, heads, M, d)``.
        v: values ``(B, groups, heads, M, d_v)``.
        bias: ``bias(start, stop)`` gives the additive bias of items ``start:stop`` along ``axis``:
            broadcastable to ``(stop - start, heads, N, M)`` for ``"groups"``, to ``(groups, heads, stop - start,
            M)`` for ``"queries"``.
        axis: ``"groups"`` cuts windows / grid groups (axis 1 of ``q``, ``k``, ``v``); ``"queries"`` cuts the
            queries (axis -2 of ``q``), every block seeing all keys.
        block: items per block (:func:`block_length`); ``block >=`` the axis length runs one call.
        scale: multiplies ``q kᵀ``; default ``d ** -0.5``.
        dropout_p: dropout on the attention weights.
        backend: attention backend, ``None`` for the default.

    Returns:
        ``(B, groups, heads, N, d_v)``, the same as one call with the whole bias.

    Example:
        >>> import torch
        >>> q = k = v = torch.randn(1, 6, 2, 16, 8)
        >>> bias = torch.randn(6, 2, 16, 16)
        >>> out = blocked_attention(q, k, v, lambda a, b: bias[a:b], axis="groups", block=4)
        >>> torch.allclose(out, attention(q, k, v, bias), atol=1e-6)
        True
    """
    if axis not in ("groups", "queries"):
        raise ValueError(f"axis must be 'groups' or 'queries', got {axis!r}")
    length = q.shape[1] if axis == "groups" else q.shape[-2]
    outputs = []
    for start in range(0, length, block):
        stop = min(length, start + block)
        if axis == "groups":
            parts = q[:, start:stop], k[:, start:stop], v[:, start:stop]
        else:
            parts = q[..., start:stop, :], k, v
        outputs.append(attention(*parts, bias(start, stop), scale=scale, dropout_p=dropout_p, backend=backend))
    if len(outputs) == 1:
        return outputs[0]
    return torch.cat(outputs, dim=1 if axis == "groups" else -2)
