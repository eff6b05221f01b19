"""Functional level: pure functions without parameters, on which the layers are built."""

from ._cache import clear_caches
from .backends import (
    BACKENDS,
    BackendUnavailableError,
    attention,
    available_backends,
    bias_for_kernel,
    get_default_backend,
    set_default_backend,
    unavailable_reason,
    use_backend,
)
from .blocked import MAX_SCORES, block_length, blocked_attention
from .masks import grid_attention_mask, grid_padding_labels, label_mask, window_attention_mask
from .padding import PAD_MODES, pad_to_multiple, padded_size, unpad
from .partition import (
    fixed_grid_partition,
    fixed_grid_reverse,
    grid_partition,
    grid_reverse,
    window_partition,
    window_reverse,
)
from .position import relative_offsets, relative_position_index, relative_position_rows
from .precision import (
    BFLOAT16_MIN_SPEEDUP,
    DTYPE_CHOICES,
    MatmulRates,
    bfloat16_pays,
    compute_dtype,
    measure_matmul_rates,
)

__all__ = [
    "BACKENDS",
    "BFLOAT16_MIN_SPEEDUP",
    "PAD_MODES",
    "BackendUnavailableError",
    "MAX_SCORES",
    "MatmulRates",
    "attention",
    "available_backends",
    "bias_for_kernel",
    "block_length",
    "bfloat16_pays",
    "compute_dtype",
    "DTYPE_CHOICES",
    "blocked_attention",
    "clear_caches",
    "use_backend",
    "fixed_grid_partition",
    "fixed_grid_reverse",
    "get_default_backend",
    "grid_attention_mask",
    "grid_padding_labels",
    "grid_partition",
    "grid_reverse",
    "label_mask",
    "measure_matmul_rates",
    "pad_to_multiple",
    "padded_size",
    "relative_offsets",
    "relative_position_index",
    "relative_position_rows",
    "set_default_backend",
    "unavailable_reason",
    "unpad",
    "window_attention_mask",
    "window_partition",
    "window_reverse",
]
