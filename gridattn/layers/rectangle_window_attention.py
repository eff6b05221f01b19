"""Rectangle-window self-attention in two orientations (CAT's Rwin-SA, DAT's spatial attention)."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_feature_map, check_heads, check_positive, check_probability, check_shift, to_pair
from ..functional.backends import check_backend
from ..functional.blocked import MAX_SCORES
from .position import PositionBiasKind, make_position_bias
from .window_attention import window_self_attention


class RectangleWindowAttention(nn.Module):
    """Self-attention in ``h x w`` windows for half the channels and in ``w x h`` windows for the other half.

    One projection gives queries, keys and values of all ``dim`` channels. The first half of each (with the
    first ``num_heads // 2`` heads) attends inside ``window_size = (h, w)`` windows, the second half inside the
    transposed ``(w, h)`` windows, each with its own position bias; a shift ``(sh, sw)`` rolls the first half by
    ``(sh, sw)`` and the second by ``(sw, sh)``. The halves are concatenated and projected. Each half is
    :func:`~gridattn.layers.window_attention.window_self_attention`, so any height and width work: padding is
    masked exactly, or, with ``zero_padding_multiple``, attended to as the official DAT does.

    Args:
        dim: channels in and out.
        num_heads: heads, even (half per orientation); must divide ``dim``.
        window_size: ``(h, w)`` of the first orientation (an int for squares).
        shift: ``(sh, sw)``, ``0 <= sh < h`` and ``0 <= sw < w`` (0: no shift).
        qkv_bias: bias in the query/key/value projection.
        position_bias: kind of each orientation's bias (default ``"dynamic"``, DAT's), see
            :func:`~gridattn.layers.position.make_position_bias`.
        bias_hidden_dim: width of an MLP bias (DAT: ``dim // 32``, at least 1).
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        mask_value: added to the scores of masked pairs (``-inf``: exact; DAT uses ``-100``).
        zero_padding_multiple: see :func:`~gridattn.layers.window_attention.window_self_attention` (DAT: the
            longer window side).
        backend: attention backend, ``None`` for the default.
        max_scores: memory bound of the bias-plus-mask sum.

    Shapes:
        ``(B, H, W, dim)`` -> ``(B, H, W, dim)``. :meth:`attend` gives the attention before the projection and
        the values, both ``(B, H, W, dim)`` (for :class:`~gridattn.layers.AdaptiveInteraction`).

    Attributes:
        position_biases: the two orientations' :class:`~gridattn.layers.position.PositionBias`, empty for
            ``"none"``.

    Raises:
        ValueError: an odd ``num_heads`` or one that does not divide ``dim``, a window below 1, a shift outside
            the window; an input that is not a 4-D map with ``dim`` channels.

    Examples:
        >>> import torch
        >>> from gridattn import RectangleWindowAttention
        >>> attention = RectangleWindowAttention(dim=60, num_heads=6, window_size=(4, 16), shift=(2, 8))
        >>> attention(torch.randn(1, 21, 29, 60)).shape
        torch.Size([1, 21, 29, 60])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | tuple[int, int],
        shift: int | tuple[int, int] = 0,
        *,
        qkv_bias: bool = True,
        position_bias: PositionBiasKind = "dynamic",
        bias_hidden_dim: int | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        mask_value: float = float("-inf"),
        zero_padding_multiple: int | None = None,
        backend: str | None = None,
        max_scores: int = MAX_SCORES,
    ) -> None:
        super().__init__()
        check_heads(dim, num_heads)
        if num_heads % 2:
            raise ValueError(f"num_heads must be even (half per window orientation), got {num_heads}")
        if zero_padding_multiple is not None:
            check_positive(zero_padding_multiple, "zero_padding_multiple")
        check_probability(attn_drop, "attn_drop")
        check_positive(max_scores, "max_scores")
        check_backend(backend)
        h, w = to_pair(window_size, "window_size")
        sh, sw = check_shift(shift, (h, w))
        self.dim, self.num_heads = dim, num_heads
        self.window_sizes = ((h, w), (w, h))
        self.shifts = ((sh, sw), (sw, sh))
        self.attn_drop, self.mask_value, self.backend, self.max_scores = attn_drop, mask_value, backend, max_scores
        self.zero_padding_multiple = zero_padding_multiple
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        biases = [make_position_bias(position_bias, num_heads=num_heads // 2, attention_dim=dim // 2, window_size=size,
                                     hidden_dim=bias_hidden_dim) for size in self.window_sizes]
        self.position_biases = nn.ModuleList(b for b in biases if b is not None)  # one per orientation; [] for none
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two orientations' attention, concatenated, before the projection; and the values."""
        check_feature_map(x, self.dim, weight=self.qkv.weight)
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).view(batch, height, width, 3, 2, self.dim // 2)
        halves = []
        for i, (size, shift) in enumerate(zip(self.window_sizes, self.shifts)):
            bias = self.position_biases[i](size) if len(self.position_biases) else None
            halves.append(window_self_attention(
                qkv[..., i, :].reshape(batch, height, width, -1), num_heads=self.num_heads // 2, window_size=size,
                shift=shift, position_bias=bias, mask_value=self.mask_value,
                zero_padding_multiple=self.zero_padding_multiple, dropout_p=self.attn_drop if self.training else 0.0,
                backend=self.backend, max_scores=self.max_scores,
            ))
        values = qkv[:, :, :, 2].reshape(batch, height, width, self.dim)
        return torch.cat(halves, dim=-1), values

    def project_out(self, x: torch.Tensor) -> torch.Tensor:
        """The output projection (and its dropout): ``(..., dim)`` -> same."""
        return self.proj_drop(self.proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.attend(x)[0])

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_sizes[0]}, "
                f"shift={self.shifts[0]}")
