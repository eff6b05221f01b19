"""Cases for the comparison with the official DAT code (``zhengchen1999/DAT``, ``basicsr/archs/dat_arch.py``).

Weights and inputs are generated from seeds, so the fixture file stores only the official outputs;
``tools/make_official_fixtures.py --dat CHECKOUT`` runs the official implementation on the same cases to produce
it. DAT's forward takes any size itself (its spatial attention zero-pads queries, keys and values to a multiple of
the longer window side, and the real tokens attend to that padding), so every configuration runs at a multiple
of that side and at odd sizes, without an outer pipeline. ``img_size`` 16 makes the official code use its stored
masks wherever the padded map is 16x16 and build new ones elsewhere: both paths are compared.
"""

from __future__ import annotations

import torch

from gridattn.models import DAT, DATConfig, dat_config
from gridattn.models.dat_layout import OFFICIAL
from gridattn.models.layout import to_layout

FIXTURE = "official_dat_outputs.pt"

# (config changes, size at a multiple of the longer window side, odd sizes)
_CONFIGS = {
    # shifted blocks in both groups (the second group shifts its first spatial block)
    "x2_w4x8": (dict(scale=2, embed_dim=32, depths=(4, 2), num_heads=(4, 2), window_size=(4, 8), img_size=16),
                (16, 24), ((13, 21), (5, 11))),
    # tall windows, 3conv, pixelshuffledirect (DAT-light's ends), odd depth
    "x3_w8x4_light": (dict(scale=3, embed_dim=32, depths=(3, 4), num_heads=(2, 4), window_size=(8, 4), img_size=16,
                           resi_connection="3conv", upsampler="pixelshuffledirect", mlp_ratio=2.0),
                      (16, 16), ((13, 21),)),
    # grayscale, square windows, three groups, no query/key/value bias
    "gray_x4_w4x4": (dict(scale=4, in_channels=1, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 2),
                          window_size=(4, 4), img_size=16, qkv_bias=False, mlp_ratio=2.0), (8, 12), ((13, 10),)),
}
CASES: dict[str, dict] = {}
for _name, (_config, _multiple, _odds) in _CONFIGS.items():
    CASES[f"{_name}_{_multiple[0]}x{_multiple[1]}"] = dict(config=_config, size=_multiple)
    for _odd in _odds:
        CASES[f"{_name}_odd_{_odd[0]}x{_odd[1]}"] = dict(config=_config, size=_odd)
for _name in [name for name in CASES if name.startswith("x3_w8x4_light")]:
    CASES[_name]["weight_std"] = 0.1  # larger weights: the odd size's padding then shows above the tolerance
# the full DAT-light x4 (18 blocks, windows 8x32; a 20x20 input is padded to 32x32) and DAT-S x2 at a multiple
CASES["dat_light_x4_odd_20x20"] = dict(config="dat_light", scale=4, size=(20, 20))
CASES["dat_s_x2_16x16"] = dict(config="dat_s", scale=2, size=(16, 16), weight_std=0.02)

ODD = sorted(name for name in CASES if "_odd_" in name)
"""Cases whose size is not a multiple of the longer window side (the official code zero-pads them)."""
MULTIPLE = sorted(name for name in CASES if name not in ODD)


def config_of(name: str) -> DATConfig:
    """The case's configuration in official numerics (as :func:`~gridattn.models.load_model` infers it)."""
    config = CASES[name]["config"]
    if isinstance(config, str):
        return dat_config(CASES[name]["scale"], config, numerics="official")
    return DATConfig(numerics="official", **config)


def official_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights in the official layout, perturbed well away from the initialisation: LayerNorm and
    BatchNorm gains around 1, no zero bias, BatchNorm statistics away from 0 and 1, temperatures between 0.5 and
    2.5, the position-bias MLPs larger than the rest (so that a misplaced bias shows). The buffers the
    configuration gives (offsets, index, masks) are kept."""
    template = to_layout(DAT(config_of(name)), OFFICIAL)
    std = CASES[name].get("weight_std", 0.05)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(template):
        value = template[key]
        if value.is_floating_point() and not key.endswith(("rpe_biases", "attn_mask_0", "attn_mask_1")):
            noise = torch.randn(value.shape, generator=gen)
            if key.endswith("running_var"):
                value = 0.5 + noise.abs()
            elif key.endswith("temperature"):
                value = 0.5 + 2 * torch.rand(value.shape, generator=gen)
            elif key.endswith(".weight") and value.dim() == 1:  # LayerNorm and BatchNorm gains
                value = 1.0 + 0.2 * noise
            elif ".pos." in key:
                value = 0.5 * noise
            else:
                value = std * noise
        state[key] = value
    return state


def input_of(name: str, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    channels = config_of(name).in_channels
    return torch.rand(1, channels, *CASES[name]["size"], generator=gen)
