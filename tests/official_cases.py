"""Cases for the comparison with the official HMANet code.

Weights and inputs are generated from seeds, so the fixture file stores only the official outputs;
``tools/make_official_fixtures.py`` runs the official implementation on the same cases to produce it.
"""

from __future__ import annotations

import torch

from gridattn.models import HMANet, HMANetConfig, to_official_state_dict

FIXTURE = "official_outputs.pt"

CASES = {
    "x2_micro_16x24": dict(config=dict(scale=2, embed_dim=32, depths=(2,), num_heads=(2,), window_size=8), size=(16, 24)),
    "x3_micro_16x16": dict(config=dict(scale=3, embed_dim=32, depths=(2,), num_heads=(2,), window_size=8), size=(16, 16)),
    "x4_tiny_odd_13x21": dict(config=dict(scale=4, embed_dim=48, depths=(2, 2), num_heads=(4, 4), window_size=8), size=(13, 21)),
    "x4_official_16x16": dict(config=dict(scale=4), size=(16, 16)),
}


def config_of(name: str) -> HMANetConfig:
    """The case's configuration with the official code's grid position-bias width (``dim // 4 // 4``)."""
    config = HMANetConfig(numerics="official", **CASES[name]["config"])
    official_width = config.embed_dim // 2 // 4 // 4
    return config.replace(grid_bias_dim=None if official_width >= 4 else official_width)


def official_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights in the official layout (keys and shapes of the official model)."""
    template = to_official_state_dict(HMANet(config_of(name)))
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(template):
        value = template[key]
        if value.is_floating_point():
            value = torch.randn(value.shape, generator=gen) * 0.05
        state[key] = value
    return state


def input_of(name: str, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, *CASES[name]["size"], generator=gen)
