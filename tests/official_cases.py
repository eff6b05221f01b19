"""Cases for the comparison with the official HMANet code.

Weights and inputs are generated from seeds, so the fixture file stores only the official outputs;
``tools/make_official_fixtures.py`` runs the official implementation on the same cases to produce it.
"""

from __future__ import annotations

import torch

from gridattn.models import HMANet, HMANetConfig, to_official_state_dict

FIXTURE = "official_outputs.pt"

_REDUCED = dict(embed_dim=36, depths=(2, 2), num_heads=(6, 6), window_size=8, interval=4)
CASES = {
    "x2_reduced_16x24": dict(config=dict(scale=2, **_REDUCED), size=(16, 24)),
    "x3_reduced_16x24": dict(config=dict(scale=3, **_REDUCED), size=(16, 24)),
    "x4_reduced_16x24": dict(config=dict(scale=4, **_REDUCED), size=(16, 24)),
    # padded the official test code's way (mirror, then crop)
    "x4_reduced_odd_13x21": dict(config=dict(scale=4, **_REDUCED), size=(13, 21)),
    # no convolution closing the groups and the body
    "x2_identity_16x24": dict(config=dict(scale=2, resi_connection="identity", **_REDUCED), size=(16, 24)),
    # the full model: smaller weights keep its 36 blocks well conditioned in float32
    "x4_official_16x32": dict(config=dict(scale=4), size=(16, 32), weight_std=0.02),
}


def config_of(name: str) -> HMANetConfig:
    """The case's configuration with the official code's grid position-bias width (``dim // 4 // 4``)."""
    config = HMANetConfig(numerics="official", **CASES[name]["config"])
    official_width = config.embed_dim // 2 // 4 // 4
    return config.replace(grid_bias_dim=None if official_width >= 4 else official_width)


def official_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights in the official layout, perturbed well away from the initialisation: no zero bias,
    LayerNorm gains around 1, GAB's residual ``scale`` around 0.5 so that GAB mistakes show."""
    template = to_official_state_dict(HMANet(config_of(name)))
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(template):
        value = template[key]
        if value.is_floating_point():
            noise = torch.randn(value.shape, generator=gen)
            if key.endswith("residual_group.scale"):
                value = 0.5 + 0.1 * noise
            elif key.endswith(".weight") and value.dim() == 1:  # LayerNorm gains
                value = 1.0 + 0.2 * noise
            else:
                value = CASES[name].get("weight_std", 0.05) * noise
        state[key] = value
    return state


def input_of(name: str, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, *CASES[name]["size"], generator=gen)
