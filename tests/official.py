"""Helpers shared by the comparisons with the official codes (tests/test_swinir.py, test_hat.py, test_dat.py)."""

from __future__ import annotations

import torch


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference, in float64."""
    return (a.double() - b.double()).abs().max().item()


def same_weights(model: torch.nn.Module, **changes) -> torch.nn.Module:
    """A model of ``model``'s class and configuration with ``changes``, holding the same weights (eval)."""
    other = type(model)(model.config.replace(**changes)).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    return other
