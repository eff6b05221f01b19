"""Window multi-head self-attention (W-MSA) and its shifted variant (SW-MSA), on maps of any size."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..functional._checks import check_feature_map, check_positive, check_probability, check_shift, head_width, to_pair
from ..functional.backends import attention, bias_for_kernel, check_backend
from ..functional.blocked import MAX_SCORES, block_length, blocked_attention
from ..functional.masks import window_attention_mask
from ..functional.padding import pad_to_multiple, unpad
from ..functional.partition import window_partition, window_reverse
from .position import PositionBiasKind, make_position_bias


def masked_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    position_bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    *,
    max_scores: int = MAX_SCORES,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str | None = None,
) -> torch.Tensor:
    """Attention inside windows with a shared position bias and a per-window mask, memory-bounded.

    The fused kernels take one additive bias, so bias and mask are summed into ``(windows, heads, N, N)``;
    that sum is built for at most ``max_scores`` entries at a time (blocks of windows), which bounds memory on
    large maps. Used by :class:`WindowAttention` and by GAB's official shifted branch.

    Args:
        q: queries ``(B, windows, heads, N, d)``, ``N`` tokens per window.
        k: keys, same shape.
        v: values ``(B, windows, heads, N, d_v)``.
        position_bias: ``(heads, N, N)``, shared by all windows, or ``None``.
        mask: ``(windows, N, N)`` (e.g. :func:`~gridattn.functional.window_attention_mask`) or ``None``.
        max_scores: at most this many bias entries are built at once.
        scale: multiplies ``q kᵀ``; default ``d ** -0.5``.
        dropout_p: dropout on the attention weights.
        backend: attention backend, ``None`` for the default.

    Returns:
        ``(B, windows, heads, N, d_v)``.
    """
    if mask is None:
        return attention(q, k, v, position_bias, scale=scale, dropout_p=dropout_p, backend=backend)
    if position_bias is None:
        return attention(q, k, v, mask[:, None], scale=scale, dropout_p=dropout_p, backend=backend)
    return blocked_attention(q, k, v, lambda start, stop: position_bias + mask[start:stop, None], axis="groups",
                             block=block_length(max_scores, position_bias.numel()), scale=scale,
                             dropout_p=dropout_p, backend=backend)


def window_self_attention(
    x: torch.Tensor,
    *,
    num_heads: int,
    window_size: int | tuple[int, int],
    shift: int | tuple[int, int] = 0,
    position_bias: torch.Tensor | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    qk_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, float]] | None = None,
    mask_value: float = float("-inf"),
    zero_padding_multiple: int | None = None,
    dropout_p: float = 0.0,
    backend: str | None = None,
    max_scores: int = MAX_SCORES,
) -> torch.Tensor:
    """(Shifted) window self-attention of a map, without the output projection: the core of
    :class:`WindowAttention` and of :class:`~gridattn.layers.RectangleWindowAttention`.

    The projected map ``[q | k | v]`` is padded at the bottom/right to a multiple of the window, rolled by
    ``-shift``, cut into windows; each window attends within itself (position bias plus the shifted-window and
    padding mask), and the result is put back, rolled back and cropped.

    Args:
        x: ``(B, H, W, 3 * width)``, queries, keys and values side by side; or, with ``project``, the input
            ``(B, H, W, C)`` that ``project`` maps to them (then, when no padding is needed, the input is rolled
            and partitioned first and the windows projected: a third as much data to move).
        num_heads: heads; ``width`` must be a multiple.
        window_size: window height and width (int or pair).
        shift: cyclic shift, ``0 <= shift < window`` per axis (int or pair).
        position_bias: ``(num_heads, N, N)`` for the ``N`` tokens of a window, or ``None``.
        project: ``(..., C) -> (..., 3 * width)``, or ``None`` when ``x`` is already projected.
        qk_transform: ``(q, k) -> (q, k, scale)`` applied to the windows' queries and keys (Swin V2's cosine
            attention), or ``None`` for ``q kᵀ / √d``.
        mask_value: added to the scores of masked pairs (``-inf``: exact; Swin's ``-100``).
        zero_padding_multiple: ``None`` (default) pads to the window and masks the padding exactly; an int
            zero-pads H and W to a multiple of it and lets every token attend to the padding as if it were part
            of the map (the official DAT code, padding to its longer window side; the window must divide it).
        dropout_p: dropout on the attention weights.
        backend: attention backend, ``None`` for the default.
        max_scores: memory bound of :func:`masked_window_attention`.

    Returns:
        ``(B, H, W, width)``.

    Raises:
        ValueError: a window below 1, a shift outside the window, a ``zero_padding_multiple`` the window does
            not divide.
    """
    window = to_pair(window_size, "window_size")
    shift = check_shift(shift, window)
    batch, height, width = x.shape[:3]
    if zero_padding_multiple is not None and zero_padding_multiple % window[0] + zero_padding_multiple % window[1]:
        raise ValueError(f"zero_padding_multiple {zero_padding_multiple} is not a multiple of the window {window}")
    multiple = window if zero_padding_multiple is None else (zero_padding_multiple, zero_padding_multiple)
    if project is not None and not (height % multiple[0] or width % multiple[1]):
        padded_h, padded_w = height, width
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = project(window_partition(x, window))
    else:
        qkv = pad_to_multiple(x if project is None else project(x), multiple)
        padded_h, padded_w = qkv.shape[1:3]
        if any(shift):
            qkv = torch.roll(qkv, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = window_partition(qkv, window)
    q, k, v = rearrange(windows, "(b n) wh ww (three heads d) -> three b n heads (wh ww) d", b=batch, three=3,
                        heads=num_heads)
    scale = None
    if qk_transform is not None:
        q, k, scale = qk_transform(q, k)
    position_bias = bias_for_kernel(position_bias, q)  # before the mask broadcasts it
    # with zero padding the padded map is treated as all real: only the shift is masked
    mask_h, mask_w = (height, width) if zero_padding_multiple is None else (padded_h, padded_w)
    mask = window_attention_mask(mask_h, mask_w, window, shift, device=q.device,
                                 dtype=q.dtype if position_bias is None else position_bias.dtype,
                                 masked_value=mask_value)  # (windows, N, N) or None
    out = masked_window_attention(q, k, v, position_bias, mask, max_scores=max_scores, scale=scale,
                                  dropout_p=dropout_p, backend=backend)
    out = rearrange(out, "b n heads (wh ww) d -> (b n) wh ww (heads d)", wh=window[0])
    out = window_reverse(out, window, padded_h, padded_w)
    if any(shift):
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return unpad(out, height, width)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, with a relative-position bias (Swin's learned
    table by default).

    ``shift=0`` is W-MSA; ``shift=window_size // 2`` is SW-MSA: the map is rolled by ``-shift`` before the
    partition and back afterwards, and a mask keeps tokens that were not neighbours apart. Any height and
    width work: the map is zero-padded at the bottom/right to a multiple of the window, padded tokens are
    masked out of attention, and the output is cropped back, so the result equals attention inside the
    windows clipped to the map.

    Args:
        dim: output channels (and, by default, input and attention channels).
        num_heads: number of heads; must divide ``dim`` unless ``head_dim`` is given.
        window_size: window height and width (int or pair).
        shift: cyclic shift, ``0 <= shift < window_size`` (int or pair).
        in_dim: input channels, default ``dim``.
        head_dim: channels per head, default ``dim // num_heads``; the attention is ``num_heads * head_dim``
            wide (``qkv``: ``in_dim -> 3 * num_heads * head_dim``, ``proj``: ``num_heads * head_dim -> dim``).
        qkv_bias: bias in the query/key/value projection.
        key_bias: with ``qkv_bias``, ``False`` fixes the key's part of the bias at zero and keeps the query's and
            the value's as ``q_bias`` and ``v_bias`` (Swin V2).
        cosine: Swin V2's scaled cosine attention: scores ``cos(q, k) · exp(min(logit_scale, ln 100))`` with a
            learned ``logit_scale`` per head (init ``ln 10``) instead of ``q kᵀ / √d``.
        position_bias: ``"table"`` (Swin's learned table, default), ``"dynamic"``, ``"continuous"`` or
            ``"none"``; see :func:`~gridattn.layers.position.make_position_bias`.
        bias_hidden_dim: width of an MLP bias (defaults in :func:`~gridattn.layers.position.make_position_bias`).
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        mask_value: added to the scores of masked token pairs. ``-inf`` (default) masks exactly; Swin and
            the official HMANet use ``-100``, which stops masking once scores approach 100.
        backend: attention backend (``"sdpa"``, ``"xformers"``, ``"math"``), ``None`` for the default.
        max_scores: memory bound of :func:`masked_window_attention`: the position bias and the mask are
            summed for at most this many score entries at a time (blocks of windows on large maps).

    Shapes:
        input ``(B, H, W, in_dim)`` -> output ``(B, H, W, dim)``.

    Attributes:
        relative_position_bias: the :class:`~gridattn.layers.position.PositionBias` (``None`` for ``"none"``).

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads`` (without ``head_dim``), window < 1, ``max_scores`` < 1,
            shift outside ``[0, window)``, an unknown ``position_bias``, an input that is not 4-D or has the
            wrong number of channels.

    Examples:
        >>> import torch
        >>> from gridattn import WindowAttention
        >>> w_msa = WindowAttention(dim=64, num_heads=4, window_size=8)
        >>> sw_msa = WindowAttention(dim=64, num_heads=4, window_size=8, shift=4)
        >>> x = torch.randn(2, 30, 45, 64)                 # any H, W: padded to 32 x 48 inside, cropped back
        >>> sw_msa(w_msa(x)).shape
        torch.Size([2, 30, 45, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | tuple[int, int],
        shift: int | tuple[int, int] = 0,
        *,
        in_dim: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        key_bias: bool = True,
        cosine: bool = False,
        position_bias: PositionBiasKind = "table",
        bias_hidden_dim: int | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        mask_value: float = float("-inf"),
        backend: str | None = None,
        max_scores: int = MAX_SCORES,
    ) -> None:
        super().__init__()
        self.head_dim = head_width(dim, num_heads, head_dim)
        check_positive(max_scores, "max_scores")
        self.max_scores = max_scores
        self.dim, self.num_heads = dim, num_heads
        width = num_heads * self.head_dim
        self.in_dim = dim if in_dim is None else in_dim
        check_positive(self.in_dim, "in_dim")
        self.window_size = to_pair(window_size, "window_size")
        self.shift = check_shift(shift, self.window_size)
        check_probability(attn_drop, "attn_drop")
        check_backend(backend)
        self.attn_drop, self.backend, self.mask_value = attn_drop, backend, mask_value
        query_value_bias = qkv_bias and not key_bias
        self.qkv = nn.Linear(self.in_dim, 3 * width, bias=qkv_bias and key_bias)
        # Swin V2: learned query and value biases, the key's fixed at zero (it matters under cosine attention)
        self.q_bias = nn.Parameter(torch.zeros(width)) if query_value_bias else None
        self.v_bias = nn.Parameter(torch.zeros(width)) if query_value_bias else None
        # Swin V2: per-head temperature of the cosine similarity, exp(logit_scale) capped at 100, init 10
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0))) if cosine else None
        self.relative_position_bias = make_position_bias(
            position_bias, num_heads=num_heads, attention_dim=width, window_size=self.window_size,
            hidden_dim=bias_hidden_dim,
        )
        self.proj = nn.Linear(width, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.in_dim, weight=self.qkv.weight)
        bias = None if self.relative_position_bias is None else self.relative_position_bias(self.window_size)
        out = window_self_attention(
            x, num_heads=self.num_heads, window_size=self.window_size, shift=self.shift, position_bias=bias,
            project=self._project, qk_transform=None if self.logit_scale is None else self._cosine,
            mask_value=self.mask_value, dropout_p=self.attn_drop if self.training else 0.0, backend=self.backend,
            max_scores=self.max_scores,
        )
        return self.proj_drop(self.proj(out))

    def _cosine(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Swin V2: cosine similarity times the temperature, not q·k / sqrt(d)."""
        temperature = torch.clamp(self.logit_scale, max=math.log(100.0)).exp().to(q.dtype)  # q's under autocast
        return F.normalize(q, dim=-1) * temperature, F.normalize(k, dim=-1), 1.0

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim)`` -> ``(..., 3 * num_heads * head_dim)``: ``[q | k | v]``."""
        if self.q_bias is None:
            return self.qkv(x)
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        return F.linear(x, self.qkv.weight, bias)

    def extra_repr(self) -> str:
        cosine = ", cosine=True" if self.logit_scale is not None else ""
        return (f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
                f"shift={self.shift}{cosine}")
