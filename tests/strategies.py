"""Hypothesis strategies and helpers shared by the tests."""

from __future__ import annotations

import torch
from hypothesis import settings
from hypothesis import strategies as st

seeds = st.integers(0, 2**31 - 1)
spatial = st.integers(1, 18)


@st.composite
def feature_maps(draw, channels: int, max_batch: int = 2, max_size: int = 18):
    """(seed, batch, height, width) for a map with the given channels."""
    return (draw(seeds), draw(st.integers(1, max_batch)), draw(st.integers(1, max_size)),
            draw(st.integers(1, max_size)), channels)


def random_map(seed: int, batch: int, height: int, width: int, channels: int, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, height, width, channels, generator=gen, dtype=torch.float64).to(dtype)


def randomize_(module: torch.nn.Module, seed: int, std: float = 0.5) -> torch.nn.Module:
    """Give every parameter non-trivial random values (biases and tables included), in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * std)
    return module


def at_least(examples: int) -> int:
    """The hypothesis profile's number of examples (tests/conftest.py), but no fewer than ``examples``."""
    return max(examples, settings.default.max_examples)
