"""Cases for the comparison with neosr's HMA (``tools/make_neosr_fixtures.py`` stores its outputs).

Weights are seeded and perturbed well away from the initialisation (as ``official_cases.official_state``), in
the official key layout that neosr shares.
"""

from __future__ import annotations

import torch

from gridattn.models import HMANet, HMANetConfig
from gridattn.models.hmanet_layout import NEOSR, NEOSR_RGB_MEAN
from gridattn.models.layout import to_layout

FIXTURE = "neosr_hma_outputs.pt"

CASES = {
    "x2_small_16x24": dict(config=dict(scale=2, embed_dim=36, depths=(2, 2), num_heads=(6, 6), window_size=8),
                           size=(16, 24)),
    "x4_small_16x16": dict(config=dict(scale=4, embed_dim=36, depths=(2,), num_heads=(6,), window_size=8),
                           size=(16, 16)),
    # neosr's `hma` preset itself: embed 60, four RHTBs of 6, window 8
    "x3_hma_16x16": dict(config=dict(scale=3, embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, window_size=8),
                         size=(16, 16), weight_std=0.02),
}


def config_of(name: str) -> HMANetConfig:
    """The case in gridattn's terms: official numerics (neosr's code is the official code), neosr's RGB mean,
    neosr's grid position-bias width (``dim // 4 // 4``, as the official code)."""
    config = HMANetConfig(numerics="official", rgb_mean=NEOSR_RGB_MEAN, drop_path_rate=0.0, **CASES[name]["config"])
    width = config.embed_dim // 2 // 4 // 4
    return config.replace(grid_bias_dim=None if width >= 4 else width)


def neosr_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights in neosr's (the official) layout: no zero bias, LayerNorm gains around 1, GAB scales
    around 0.5."""
    template = to_layout(HMANet(config_of(name)), NEOSR)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(template):
        value = template[key]
        if value.is_floating_point():
            noise = torch.randn(value.shape, generator=gen)
            if key.endswith("residual_group.scale"):
                value = 0.5 + 0.1 * noise
            elif key.endswith(".weight") and value.dim() == 1:
                value = 1.0 + 0.2 * noise
            else:
                value = CASES[name].get("weight_std", 0.05) * noise
        state[key] = value
    return state


def input_of(name: str, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, *CASES[name]["size"], generator=gen)
