"""Cases for the comparison with the official SwinIR code (``JingyunLiang/SwinIR``, ``models/network_swinir.py``).

Weights and inputs are generated from seeds, so the fixture file stores only the official outputs;
``tools/make_official_fixtures.py --swinir CHECKOUT`` runs the official implementation on the same cases to
produce it. Every configuration runs at a multiple of its window and at an odd size (which the official
forward pads by reflection and crops back). The reduced cases take well under a second each on 2 CPU cores.
"""

from __future__ import annotations

import torch

from gridattn.models import SwinIR, SwinIRConfig, swinir_config
from gridattn.models.layout import to_layout
from gridattn.models.swinir_layout import OFFICIAL

FIXTURE = "official_swinir_outputs.pt"

# (config changes, size at a window multiple, odd size)
_CONFIGS = {
    "ps_x2": (dict(scale=2, embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=4, img_size=16),
              (16, 24), (13, 21)),
    "ps_x3": (dict(scale=3, embed_dim=24, depths=(2, 2), num_heads=(3, 3), window_size=8, img_size=16),
              (16, 24), (13, 21)),
    "ps_x4": (dict(scale=4, embed_dim=36, depths=(2, 2), num_heads=(3, 2), window_size=4, img_size=12),
              (12, 16), (13, 21)),
    "ps_x8": (dict(scale=8, embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=4, img_size=8),
              (8, 12), (7, 9)),
    "direct_x3": (dict(scale=3, upsampler="pixelshuffledirect", embed_dim=24, depths=(2, 2), num_heads=(2, 2),
                       window_size=8, img_size=24), (16, 24), (13, 21)),
    "nearest_x2": (dict(scale=2, upsampler="nearest+conv", embed_dim=24, depths=(2, 2), num_heads=(2, 2),
                        window_size=4, img_size=16), (16, 16), (13, 21)),
    "nearest_x4": (dict(scale=4, upsampler="nearest+conv", embed_dim=24, depths=(2, 2), num_heads=(3, 3),
                        window_size=8, img_size=16), (16, 16), (13, 21)),
    # 3conv, no query/key/value bias, MLP ratio 1.5, three groups of different depth and heads
    "3conv_x2": (dict(scale=2, resi_connection="3conv", embed_dim=24, depths=(2, 3, 2), num_heads=(2, 3, 4),
                      window_size=4, img_size=16, qkv_bias=False, mlp_ratio=1.5), (16, 24), (13, 21)),
    "denoise_gray": (dict(scale=1, in_channels=1, upsampler="none", embed_dim=24, depths=(2, 2), num_heads=(2, 2),
                          window_size=8, img_size=32), (16, 24), (13, 21)),
    "denoise_color": (dict(scale=1, upsampler="none", embed_dim=24, depths=(2, 2), num_heads=(3, 3),
                           window_size=4, img_size=16), (16, 24), (13, 21)),
    "jpeg_gray": (dict(scale=1, in_channels=1, upsampler="none", embed_dim=24, depths=(2, 2), num_heads=(2, 2),
                       window_size=7, img_size=14, img_range=255.0), (14, 21), (11, 17)),
    "jpeg_color": (dict(scale=1, upsampler="none", embed_dim=24, depths=(2, 2), num_heads=(3, 3),
                        window_size=7, img_size=21, img_range=255.0), (14, 21), (11, 17)),
}
CASES: dict[str, dict] = {}
for _name, (_config, _multiple, _odd) in _CONFIGS.items():
    CASES[f"{_name}_{_multiple[0]}x{_multiple[1]}"] = dict(config=_config, size=_multiple)
    CASES[f"{_name}_odd_{_odd[0]}x{_odd[1]}"] = dict(config=_config, size=_odd)
# the full classical x4 model (36 blocks): smaller weights keep it well conditioned in float32
CASES["classical_x4_16x16"] = dict(config="classical", size=(16, 16), weight_std=0.02)

ODD = sorted(name for name in CASES if "_odd_" in name)
"""Cases whose size is not a multiple of the window (the official forward pads them by reflection)."""
MULTIPLE = sorted(name for name in CASES if name not in ODD)


def config_of(name: str) -> SwinIRConfig:
    """The case's configuration in official numerics (as :func:`~gridattn.models.load_model` infers it)."""
    config = CASES[name]["config"]
    if isinstance(config, str):
        return swinir_config(4, config, numerics="official")
    return SwinIRConfig(numerics="official", **config)


def official_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights in the official layout, perturbed well away from the initialisation: LayerNorm gains
    around 1, no zero bias, random relative-position tables (larger than the rest, so that a misplaced bias
    shows). The ``relative_position_index`` and ``attn_mask`` buffers are kept as the configuration gives them."""
    template = to_layout(SwinIR(config_of(name)), OFFICIAL)
    std = CASES[name].get("weight_std", 0.05)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(template):
        value = template[key]
        if value.is_floating_point() and not key.endswith("attn_mask"):
            noise = torch.randn(value.shape, generator=gen)
            if key.endswith(".weight") and value.dim() == 1:  # LayerNorm gains
                value = 1.0 + 0.2 * noise
            elif key.endswith("relative_position_bias_table"):
                value = 0.3 * noise
            else:
                value = std * noise
        state[key] = value
    return state


def input_of(name: str, seed: int = 1, batch: int = 1) -> torch.Tensor:
    """The case's image in [0, 1], ``(batch, in_channels, H, W)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, config_of(name).in_channels, *CASES[name]["size"], generator=gen)
