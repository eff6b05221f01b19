"""Relative position biases: a learned table (Swin) and a small MLP over relative offsets (dynamic).

Both return an additive bias ``(num_heads, N, N)`` for the ``N`` tokens of a window or group in raster
order, to be added to the attention scores. In eval mode with gradients disabled the bias depends only on
the weights and the size, so it is computed once per size and reused while the weights stay the same
(see :class:`~gridattn.layers._eval_cache.CachedInEval`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_positive, to_pair
from ..functional.position import relative_offsets, relative_position_index
from ._eval_cache import CachedInEval


class RelativePositionBias(CachedInEval):
    """Swin's learned relative-position bias for a fixed ``window_size``.

    ``forward()`` takes no input and returns ``(num_heads, N, N)`` with ``N = h * w``: entry ``[head, n, m]``
    is the table row of the offset between tokens ``n`` and ``m`` (raster order), per
    :func:`~gridattn.functional.relative_position_index`.

    Args:
        window_size: window height and width (int or pair).
        num_heads: number of attention heads.

    Attributes:
        relative_position_bias_table: the learned parameter, ``((2h-1)(2w-1), num_heads)``, truncated-normal
            init (std 0.02).

    Raises:
        ValueError: ``num_heads`` or a window size below 1.

    Examples:
        >>> from gridattn import RelativePositionBias
        >>> RelativePositionBias(window_size=8, num_heads=4)().shape
        torch.Size([4, 64, 64])
    """

    def __init__(self, window_size: int | tuple[int, int], num_heads: int) -> None:
        super().__init__()
        check_positive(num_heads, "num_heads")
        self.window_size = to_pair(window_size, "window_size")
        self.num_heads = num_heads
        h, w = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * h - 1) * (2 * w - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self) -> torch.Tensor:
        table = self.relative_position_bias_table
        return self._cached((table.device, table.dtype), self._compute)

    def _compute(self) -> torch.Tensor:
        table = self.relative_position_bias_table
        index = relative_position_index(self.window_size, table.device)
        return table[index].permute(2, 0, 1).contiguous()  # (heads, N, N); fused kernels want contiguous rows

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, num_heads={self.num_heads}"


class DynamicPositionBias(CachedInEval):
    """Relative-position bias from an MLP over relative offsets, for groups of any size (HMANet's).

    The MLP maps each offset ``(dy, dx)`` (raw integers, as in the official code) through
    ``Linear(2, hidden) -> 3 x [LayerNorm, ReLU, Linear]``, the last one to ``num_heads`` outputs.
    The official HMANet uses ``hidden_dim = attention_dim // 16`` (written ``dim // 4 // 4`` there): 5 for
    its 90-channel grid attention.

    ``forward(group_size)`` returns ``(num_heads, N, N)`` with ``N = group_h * group_w``; the same weights
    serve every group size, which is what lets :class:`~gridattn.GridAttention` run on maps of any size.

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
        """Bias of every relative offset: ``((2h-1)(2w-1), num_heads)``, rows as :func:`relative_offsets`."""
        weight = self.pos_proj.weight
        offsets = relative_offsets(group_size, weight.device).to(weight.dtype)
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))

    def forward(self, group_size: int | tuple[int, int]) -> torch.Tensor:
        size = to_pair(group_size, "group_size")
        weight = self.pos_proj.weight
        return self._cached((size, weight.device, weight.dtype), lambda: self._compute(size))

    def _compute(self, size: tuple[int, int]) -> torch.Tensor:
        index = relative_position_index(size, self.pos_proj.weight.device)
        return self.table(size)[index].permute(2, 0, 1).contiguous()  # (heads, N, N)
