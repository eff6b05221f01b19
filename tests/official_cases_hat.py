"""Cases for the comparison with the official HAT code (``XPixelGroup/HAT``, ``hat/archs/hat_arch.py``).

Weights and inputs are generated from seeds, so the fixture file stores only the official outputs;
``tools/make_official_fixtures.py --hat CHECKOUT`` runs the official implementation on the same cases to produce
it. Every configuration runs at a multiple of its window and at an odd size, which HAT's test pipeline
(``hat/models/hat_model.py``) pads by reflection to the window and crops back. The reduced cases take well
under a second each on 2 CPU cores.

What the official code can run: the OCAB's unfold gives one key window per query window only when the overlap
``int(window_size * overlap_ratio)`` is even (window 4: ratios 0.5 and 1.0; window 8: 0.25, 0.5, 1.0);
``resi_connection`` is ``"1conv"`` or ``"identity"`` (its ``"3conv"`` builds no convolution and fails in the
forward). ``conv_scale`` is not in the weights
(reading a file assumes the official 0.01), so the cases keep 0.01 and give the CAB branch larger weights instead,
so that its contribution shows.
"""

from __future__ import annotations

import torch

from gridattn.models import HAT, HATConfig, hat_config
from gridattn.models.hat_layout import OFFICIAL
from gridattn.models.layout import to_layout

FIXTURE = "official_hat_outputs.pt"

_SMALL = dict(embed_dim=24, compress_ratio=3, squeeze_factor=6)
# (config changes, size at a window multiple, odd size)
_CONFIGS = {
    "x2_w4_r0.5": (dict(scale=2, window_size=4, overlap_ratio=0.5, depths=(2, 2), num_heads=(2, 3), **_SMALL),
                   (16, 24), (13, 21)),
    "x3_w8_r0.5": (dict(scale=3, window_size=8, overlap_ratio=0.5, depths=(2, 2), num_heads=(3, 3), **_SMALL),
                   (16, 24), (13, 21)),
    "x4_w4_r1.0": (dict(scale=4, window_size=4, overlap_ratio=1.0, depths=(2, 2), num_heads=(4, 2), **_SMALL),
                   (16, 24), (13, 21)),
    "x4_w8_r0.25": (dict(scale=4, window_size=8, overlap_ratio=0.25, depths=(2, 2), num_heads=(2, 2), **_SMALL),
                    (16, 24), (13, 21)),
    # grayscale, three groups of different depth and heads, no query/key/value bias, MLP ratio 1.5
    "gray_x2_w4_r0.5": (dict(scale=2, in_channels=1, window_size=4, overlap_ratio=0.5, depths=(1, 3, 2),
                             num_heads=(2, 4, 3), qkv_bias=False, mlp_ratio=1.5, **_SMALL), (8, 12), (13, 21)),
    # no convolution closing the groups and the body
    "identity_x2_w4_r0.5": (dict(scale=2, window_size=4, overlap_ratio=0.5, depths=(2, 2), num_heads=(2, 3),
                                 resi_connection="identity", **_SMALL), (16, 24), (13, 21)),
}
CASES: dict[str, dict] = {}
for _name, (_config, _multiple, _odd) in _CONFIGS.items():
    CASES[f"{_name}_{_multiple[0]}x{_multiple[1]}"] = dict(config=_config, size=_multiple)
    CASES[f"{_name}_odd_{_odd[0]}x{_odd[1]}"] = dict(config=_config, size=_odd)
# the full HAT-S x4 (36 HABs, 6 OCABs, window 16): smaller weights keep it well conditioned in float32
CASES["hat_s_x4_16x16"] = dict(config="hat_s", size=(16, 16), weight_std=0.02)

ODD = sorted(name for name in CASES if "_odd_" in name)
"""Cases whose size is not a multiple of the window (the official pipeline pads them by reflection)."""
MULTIPLE = sorted(name for name in CASES if name not in ODD)


def config_of(name: str) -> HATConfig:
    """The case's configuration in official numerics (as :func:`~gridattn.models.load_model` infers it)."""
    config = CASES[name]["config"]
    if isinstance(config, str):
        return hat_config(4, config, numerics="official")
    return HATConfig(numerics="official", **config)


def official_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights in the official layout, perturbed well away from the initialisation: LayerNorm gains
    around 1, no zero bias, random relative-position tables (larger than the rest, so that a misplaced bias
    shows), the CAB branch's convolutions larger (its output is scaled by ``conv_scale`` 0.01). The index buffers
    ``relative_position_index_SA`` / ``_OCA`` are kept as the configuration gives them."""
    template = to_layout(HAT(config_of(name)), OFFICIAL)
    std = CASES[name].get("weight_std", 0.05)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(template):
        value = template[key]
        if value.is_floating_point():
            noise = torch.randn(value.shape, generator=gen)
            if key.endswith(".weight") and value.dim() == 1:  # LayerNorm gains
                value = 1.0 + 0.2 * noise
            elif key.endswith("relative_position_bias_table"):
                value = 0.5 * noise
            elif ".conv_block.cab." in key and std == 0.05:
                value = 0.2 * noise
            else:
                value = std * noise
        state[key] = value
    return state


def input_of(name: str, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    channels = config_of(name).in_channels
    return torch.rand(1, channels, *CASES[name]["size"], generator=gen)
