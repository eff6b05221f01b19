"""Settings that every attention layer of a model shares, changed in one call."""

from __future__ import annotations

from torch import nn

from ..functional._checks import check_positive
from ..functional.backends import check_backend
from .grid_attention import GridAttention
from .overlapping_attention import OverlappingCrossAttention
from .rectangle_window_attention import RectangleWindowAttention
from .window_attention import WindowAttention

ATTENTION_LAYERS = (WindowAttention, GridAttention, OverlappingCrossAttention, RectangleWindowAttention)
"""The layers that have an attention ``backend`` and a ``max_scores`` memory bound."""


def set_attention_options(model: nn.Module, *, backend: str | None = None, max_scores: int | None = None) -> int:
    """Set ``backend`` and / or ``max_scores`` (each when given) on every attention layer inside ``model``.

    Returns:
        How many layers were changed.

    Raises:
        ValueError: an unknown backend or a ``max_scores`` below 1.

    Example:
        >>> from gridattn.layers import set_attention_options
        >>> from gridattn.models import HMANet, hmanet_config
        >>> set_attention_options(HMANet(hmanet_config(2, "tiny")), backend="math")   # FABs and GAB branches
        10
    """
    if backend is not None:
        check_backend(backend)
    if max_scores is not None:
        check_positive(max_scores, "max_scores")
    layers = [m for m in model.modules() if isinstance(m, ATTENTION_LAYERS)]
    for layer in layers:
        if backend is not None:
            layer.backend = backend
        if max_scores is not None:
            layer.max_scores = max_scores
    return len(layers)
