"""Relative position biases, one interface for every kind: a learned table (Swin, MaxViT), a small MLP over
raw offsets (HMANet's "dynamic" bias) and an MLP over log-spaced offsets ("continuous": MaxViT ``rmlp``,
Swin V2).

Every bias is a :class:`PositionBias`: ``bias(group_size)`` is the additive bias ``(num_heads, N, N)`` for the
``N = h * w`` tokens of a window or group in raster order, and ``bias.table(group_size)`` is the bias of each
relative offset, ``((2h-1)(2w-1), num_heads)`` with rows as :func:`~gridattn.functional.relative_offsets`, from
which large groups gather their bias a block of queries at a time (:func:`bias_rows`). ``bias(group_size)``
depends only on the weights and the size: inside :func:`~gridattn.layers.bias_cache` it is computed once per size
and reused.

The attention layers pick one by name (``position_bias="table" | "dynamic" | "continuous" | "none"``) through
:func:`make_position_bias`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ..functional._checks import check_positive, check_probability, to_pair
from ..functional.position import relative_offsets, relative_position_index, relative_position_rows
from .caching import CachedInEval

__all__ = ["POSITION_BIAS_KINDS", "ContinuousPositionBias", "DynamicPositionBias", "PositionBias", "PositionBiasKind",
           "RelativePositionBias", "bias_rows", "log_spaced_offsets", "make_position_bias"]

PositionBiasKind = Literal["table", "dynamic", "continuous", "none"]
"""The names of the position-bias kinds the attention layers accept (``position_bias=``)."""
POSITION_BIAS_KINDS: tuple[str, ...] = ("table", "dynamic", "continuous", "none")
"""The same names, as a tuple (for checks and choices)."""


class PositionBias(CachedInEval):
    """The interface of a relative-position bias: subclasses define :meth:`table` (and set ``num_heads``).

    Any subclass can replace a layer's bias (``WindowAttention.relative_position_bias``,
    ``GridAttention.position_biases[i]``); the layer only calls ``bias(group_size)`` and ``bias.table(group_size)``.

    ``forward(group_size)`` gathers the table at every token pair: entry ``[head, n, m]`` is the table row of
    the offset of token ``n`` minus token ``m`` (raster order), per
    :func:`~gridattn.functional.relative_position_index`.
    """

    num_heads: int

    def table(self, group_size: int | tuple[int, int]) -> torch.Tensor:
        """Bias of every relative offset of an ``h x w`` group: ``((2h-1)(2w-1), num_heads)``."""
        raise NotImplementedError

    def forward(self, group_size: int | tuple[int, int]) -> torch.Tensor:
        size = to_pair(group_size, "group_size")
        weight = next(self.parameters(), None)
        if weight is None:  # a fixed bias (no weights, e.g. from buffers): nothing to cache against
            return self._gather(size)
        return self._cached((size, weight.device, weight.dtype), lambda: self._gather(size))

    def _gather(self, size: tuple[int, int]) -> torch.Tensor:
        table = self.table(size)
        index = relative_position_index(size, table.device)
        return table[index].permute(2, 0, 1).contiguous()  # (heads, N, N); fused kernels want contiguous rows


def bias_rows(table: torch.Tensor, group_size: int | tuple[int, int], start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` (queries) of ``bias(group_size)`` from its ``table``: ``(heads, stop - start, N)``.

    The memory-bounded form of every :class:`PositionBias`: a group of thousands of tokens gets its bias a block
    of queries at a time instead of as one ``(heads, N, N)`` tensor.

    Examples:
        >>> import torch
        >>> from gridattn.layers.position import DynamicPositionBias, bias_rows
        >>> bias = DynamicPositionBias(num_heads=2, hidden_dim=4)
        >>> torch.equal(bias_rows(bias.table((5, 6)), (5, 6), 7, 12), bias((5, 6))[:, 7:12])
        True
    """
    rows = relative_position_rows(group_size, start, stop, table.device)
    return table[rows].permute(2, 0, 1).contiguous()


class RelativePositionBias(PositionBias):
    """Swin's (and MaxViT's) learned relative-position table for windows up to ``window_size``.

    Groups smaller than the window (a window clipped by a small map) use the centre of the table: the rows of
    the offsets they contain. Larger groups are refused.

    Args:
        window_size: largest window height and width (int or pair).
        num_heads: number of attention heads.

    Attributes:
        relative_position_bias_table: the learned parameter, ``((2h-1)(2w-1), num_heads)``, rows as
            :func:`~gridattn.functional.relative_offsets` (offset = query minus key), truncated-normal init
            (std 0.02).

    Raises:
        ValueError: ``num_heads`` or a window size below 1; a group larger than the window.

    Examples:
        >>> from gridattn import RelativePositionBias
        >>> bias = RelativePositionBias(window_size=8, num_heads=4)
        >>> bias(8).shape
        torch.Size([4, 64, 64])
        >>> bias((3, 8)).shape                              # a window clipped to 3 rows
        torch.Size([4, 24, 24])
    """

    def __init__(self, window_size: int | tuple[int, int], num_heads: int) -> None:
        super().__init__()
        check_positive(num_heads, "num_heads")
        self.window_size = to_pair(window_size, "window_size")
        self.num_heads = num_heads
        h, w = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * h - 1) * (2 * w - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def table(self, group_size: int | tuple[int, int]) -> torch.Tensor:
        (gh, gw), (h, w) = to_pair(group_size, "group_size"), self.window_size
        if gh > h or gw > w:
            raise ValueError(f"a learned position table for {h}x{w} windows has no bias for {gh}x{gw} groups; "
                             "use a smaller group or position_bias='dynamic' or 'continuous'")
        table = self.relative_position_bias_table
        if (gh, gw) == (h, w):
            return table
        rows = table.reshape(2 * h - 1, 2 * w - 1, self.num_heads)[h - gh:h + gh - 1, w - gw:w + gw - 1]
        return rows.reshape(-1, self.num_heads)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, num_heads={self.num_heads}"


class DynamicPositionBias(PositionBias):
    """Relative-position bias from an MLP over relative offsets, for groups of any size (HMANet's).

    The MLP maps each offset ``(dy, dx)`` (raw integers, as in the official code) through
    ``Linear(2, hidden) -> 3 x [LayerNorm, ReLU, Linear]``, the last one to ``num_heads`` outputs.
    The official HMANet uses ``hidden_dim = attention_dim // 16`` (written ``dim // 4 // 4`` there): 5 for
    its 90-channel grid attention.

    The same weights serve every group size, which is what lets :class:`~gridattn.GridAttention` run on maps
    of any size.

    Args:
        num_heads: number of attention heads (outputs of the MLP).
        hidden_dim: width of the MLP.

    Raises:
        ValueError: ``num_heads`` or ``hidden_dim`` below 1.

    Examples:
        >>> from gridattn import DynamicPositionBias
        >>> bias = DynamicPositionBias(num_heads=3, hidden_dim=8)
        >>> bias((10, 13)).shape
        torch.Size([3, 130, 130])
        >>> bias.table((10, 13)).shape                     # one row per relative offset
        torch.Size([475, 3])
    """

    def __init__(self, num_heads: int, hidden_dim: int) -> None:
        super().__init__()
        check_positive(num_heads, "num_heads")
        check_positive(hidden_dim, "hidden_dim")
        self.num_heads = num_heads
        self.pos_proj = nn.Linear(2, hidden_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_heads))

    def table(self, group_size: int | tuple[int, int]) -> torch.Tensor:
        weight = self.pos_proj.weight
        offsets = relative_offsets(group_size, weight.device).to(weight.dtype)
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


def log_spaced_offsets(
    size: int | tuple[int, int],
    *,
    normalize_by: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Relative offsets on a log scale, ``((2h-1)(2w-1), 2)`` float32, rows as :func:`relative_offsets`.

    * ``normalize_by=None`` (MaxViT ``rmlp``): ``sign(d) * ln(1 + |d|)`` of the raw offset ``d``.
    * ``normalize_by=(H, W)`` (Swin V2): ``d`` is scaled to ``8 * d / (H - 1)`` (``W`` for columns), then
      ``sign * log2(1 + |.|) / 3``, so offsets up to the window of size ``(H, W)`` fall in
      ``[-log2(9) / 3, log2(9) / 3]`` (about ``[-1.06, 1.06]``).

    Always float32 (then cast by the caller), as timm computes them, so float64 copies of a model agree.
    """
    # the operations in timm's order (divide, then times 8; log of 1 + |d|): float64 copies agree to the bit
    offsets = relative_offsets(size, device)
    if normalize_by is None:
        return torch.sign(offsets) * torch.log(1.0 + offsets.abs())
    divisor = torch.tensor([max(n - 1, 1) for n in normalize_by], dtype=offsets.dtype, device=offsets.device)
    offsets = offsets / divisor * 8
    return torch.sign(offsets) * torch.log2(1.0 + offsets.abs()) / math.log2(8)


class ContinuousPositionBias(PositionBias):
    """Relative-position bias from an MLP over log-spaced offsets, for groups of any size.

    ``Linear(2, hidden) -> ReLU -> Dropout -> Linear(hidden, num_heads)`` on :func:`log_spaced_offsets`.

    * ``style="maxvit"`` (timm's MaxViT / MaxxViT ``rmlp`` models): natural-log offsets, output used as is.
    * ``style="swinv2"`` (Swin V2): offsets normalised by ``pretrained_window_size - 1`` (or by the group's own
      size minus 1 when it is ``None``), no bias in the last Linear, output ``16 * sigmoid(.)``.

    Args:
        num_heads: number of attention heads (outputs of the MLP).
        hidden_dim: width of the MLP (512 in timm and Swin V2).
        style: ``"maxvit"`` or ``"swinv2"``.
        pretrained_window_size: ``"swinv2"`` only: the window the normalisation refers to.
        dropout: dropout after the hidden ReLU in training (timm's MaxViT uses 0.125).

    Raises:
        ValueError: ``num_heads`` or ``hidden_dim`` below 1, an unknown style, a dropout outside ``[0, 1)``,
            ``pretrained_window_size`` with ``style="maxvit"``.

    Examples:
        >>> from gridattn import ContinuousPositionBias
        >>> bias = ContinuousPositionBias(num_heads=4, hidden_dim=32)
        >>> bias((7, 7)).shape, bias((9, 5)).shape
        (torch.Size([4, 49, 49]), torch.Size([4, 45, 45]))
    """

    def __init__(
        self,
        num_heads: int,
        hidden_dim: int = 512,
        *,
        style: Literal["maxvit", "swinv2"] = "maxvit",
        pretrained_window_size: int | tuple[int, int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive(num_heads, "num_heads")
        check_positive(hidden_dim, "hidden_dim")
        check_probability(dropout, "dropout")
        if style not in ("maxvit", "swinv2"):
            raise ValueError(f"style must be 'maxvit' or 'swinv2', got {style!r}")
        if style == "maxvit" and pretrained_window_size is not None:
            raise ValueError("pretrained_window_size normalises Swin V2's offsets; style='maxvit' does not use it")
        self.num_heads, self.style = num_heads, style
        self.pretrained_window_size = (
            None if pretrained_window_size is None else to_pair(pretrained_window_size, "pretrained_window_size")
        )
        self.fc1 = nn.Linear(2, hidden_dim)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, num_heads, bias=style == "maxvit")

    def table(self, group_size: int | tuple[int, int]) -> torch.Tensor:
        size = to_pair(group_size, "group_size")
        normalize_by = (self.pretrained_window_size or size) if self.style == "swinv2" else None
        weight = self.fc1.weight
        offsets = log_spaced_offsets(size, normalize_by=normalize_by, device=weight.device).to(weight.dtype)
        out = self.fc2(self.drop(torch.relu(self.fc1(offsets))))
        return 16 * torch.sigmoid(out) if self.style == "swinv2" else out

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, style={self.style!r}"


def dynamic_bias_width(attention_dim: int) -> int:
    """The default width of a ``"dynamic"`` bias MLP: ``max(4, attention_dim // 16)``."""
    return max(4, attention_dim // 16)


def make_position_bias(
    kind: str,
    *,
    num_heads: int,
    attention_dim: int,
    window_size: int | tuple[int, int] | None = None,
    hidden_dim: int | None = None,
) -> PositionBias | None:
    """The position bias an attention layer asked for by name, ``None`` for ``"none"``.

    Args:
        kind: ``"table"`` (:class:`RelativePositionBias`, needs ``window_size``), ``"dynamic"``
            (:class:`DynamicPositionBias`, needs ``hidden_dim``), ``"continuous"``
            (:class:`ContinuousPositionBias`, ``hidden_dim`` default 512) or ``"none"``.
        num_heads: number of heads.
        attention_dim: the attention's width (``num_heads * head_dim``), for the default ``hidden_dim``.
        window_size: the fixed group size, for ``"table"``.
        hidden_dim: width of the MLP biases; default ``max(4, attention_dim // 16)`` for ``"dynamic"`` (the
            official HMANet formula ``dim // 4 // 4`` where that is at least 4: below, the official formula gives
            0 (a crash) to 3, and a width of 1 makes the MLP constant) and 512 for ``"continuous"`` (timm's).

    Raises:
        ValueError: an unknown kind; ``"table"`` without a fixed group size.
    """
    if kind not in POSITION_BIAS_KINDS:
        raise ValueError(f"position_bias must be one of {', '.join(map(repr, POSITION_BIAS_KINDS))}, got {kind!r}")
    if kind == "none":
        return None
    if kind == "table":
        if window_size is None:
            raise ValueError("position_bias='table' needs a fixed group size (grid_size=, not interval=); "
                             "use 'dynamic' or 'continuous' for groups that change with the map")
        return RelativePositionBias(window_size, num_heads)
    if kind == "dynamic":
        return DynamicPositionBias(num_heads, dynamic_bias_width(attention_dim) if hidden_dim is None else hidden_dim)
    return ContinuousPositionBias(num_heads, 512 if hidden_dim is None else hidden_dim)
