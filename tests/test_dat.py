"""DAT: official outputs (fixture made by the official code), corrected numerics against float64 references,
parameter counts, the official layout, files, detection and any input size.

The official code (``zhengchen1999/DAT``) is used where a checkout is at hand ($DAT_CHECKOUT, default
/work/checkouts/zhengchen1999+DAT); without one those comparisons skip, and the fixture
(``tests/fixtures/official_dat_outputs.pt``, made by ``tools/make_official_fixtures.py --dat CHECKOUT``) carries
the official outputs and parameter counts.
"""

from __future__ import annotations

import functools
import os
import sys
import types
from pathlib import Path

import pytest
import reference
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from official import max_diff, same_weights
from official_cases_dat import CASES, FIXTURE, MULTIPLE, ODD, config_of, input_of, official_state
from strategies import at_least, random_map, randomize_

from gridattn import RectangleWindowAttention
from gridattn.blocks import DATGroup
from gridattn.models import (
    DAT,
    HAT,
    CheckpointError,
    HMANet,
    SwinIR,
    dat_config,
    dat_layout,
    hat_config,
    hat_layout,
    hmanet_config,
    hmanet_layout,
    load_model,
    save_model,
    swinir_config,
    swinir_layout,
)
from gridattn.models.dat import PRESETS
from gridattn.models.files import detect_architecture
from gridattn.models.layout import from_layout, to_layout

FIXTURES = Path(__file__).parent / "fixtures"
DAT_CHECKOUT = Path(os.environ.get("DAT_CHECKOUT", "/work/checkouts/zhengchen1999+DAT"))
needs_dat = pytest.mark.skipif(not (DAT_CHECKOUT / "basicsr" / "archs" / "dat_arch.py").is_file(),
                               reason=f"no checkout of zhengchen1999/DAT at {DAT_CHECKOUT} (set DAT_CHECKOUT)")
RELATIVE_TOLERANCE = 5e-6
"""Official numerics vs the official outputs, float32: max |diff| <= this times max |official output|."""


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURES / FIXTURE, weights_only=True)


@functools.cache
def _official_arch() -> types.ModuleType:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from official_reference import load_dat_arch

    return load_dat_arch(DAT_CHECKOUT)


def _official(config):
    arch = _official_arch()  # puts tools/ on the path
    from official_reference import official_dat

    return official_dat(arch, config)


# ---------------------------------------------------------------------------------------------------------
# (a), (b) official outputs; corrected numerics differ where there is padding


@pytest.mark.parametrize("blocks", [False, True], ids=["whole", "memory-bounded"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_official_numerics_reproduce_the_official_code(name, blocks, fixture):
    """Loaded from the official state dict (the configuration inferred from its keys and shapes), official
    numerics give the official outputs to RELATIVE_TOLERANCE of their magnitude, its attention to the zero padding
    included. ``blocks``: the attentions build their bias for a few score entries at a time."""
    model = load_model({"params": official_state(name)})
    assert isinstance(model, DAT) and model.config == config_of(name) and not model.training
    if blocks:
        for module in model.modules():
            if hasattr(module, "max_scores"):
                module.max_scores = 64
    expected = fixture["outputs"][name]
    with torch.no_grad():
        out = model(input_of(name))
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert max_diff(out, expected) <= RELATIVE_TOLERANCE * expected.abs().max().item()


@pytest.mark.parametrize("name", sorted(CASES))
def test_corrected_numerics_differ_from_the_official_outputs_only_with_padding(name, fixture):
    """Negative control: with the padding masked (corrected), odd sizes miss the official outputs by far; at
    multiples of the longer window side nothing is padded and the -inf masks give what -100 gave."""
    corrected = same_weights(load_model({"params": official_state(name)}), numerics="corrected")
    expected = fixture["outputs"][name]
    tolerance = RELATIVE_TOLERANCE * expected.abs().max().item()
    with torch.no_grad():
        diff = max_diff(corrected(input_of(name)), expected)
    if name in ODD:
        assert diff > max(1e-3, 100 * tolerance)
    else:
        assert diff <= tolerance


def test_cases_cover_scales_windows_ends_and_sizes():
    configs = [config_of(name) for name in CASES]
    assert {c.scale for c in configs} == {2, 3, 4}
    windows = {c.window_size for c in configs}
    assert any(h < w for h, w in windows) and any(h > w for h, w in windows) and any(h == w for h, w in windows)
    assert {c.upsampler for c in configs} == {"pixelshuffle", "pixelshuffledirect"}
    assert {c.resi_connection for c in configs} == {"1conv", "3conv"} and {c.in_channels for c in configs} == {1, 3}
    for name in ODD:
        c, (h, w) = config_of(name), CASES[name]["size"]
        assert h % max(c.window_size) or w % max(c.window_size)
    for name in MULTIPLE:
        c, (h, w) = config_of(name), CASES[name]["size"]
        assert h % max(c.window_size) == 0 and w % max(c.window_size) == 0


# ---------------------------------------------------------------------------------------------------------
# (c) one residual group against independent float64 references


def _group_reference(group: DATGroup, x: torch.Tensor, official: bool = False) -> torch.Tensor:
    """Per block: x + interaction(attention)(LN x), x + SGFN(LN x); then the conv and the long skip."""
    y = x.double()
    for block in group.blocks:
        if isinstance(block.attn.fn.attention, RectangleWindowAttention):
            attend = functools.partial(reference.rectangle_window_attention, official=official)
        else:
            attend = reference.channel_self_attention
        y = reference.pre_norm(block.attn, y, functools.partial(reference.adaptive_interaction, attend=attend))
        y = reference.pre_norm(block.ffn, y, reference.spatial_gate_mlp)
    return x.double() + reference.conv2d_same(y, group.conv)


def _random_group(seed: int, first_shifted: bool = False) -> DATGroup:
    group = DATGroup(32, depth=4, num_heads=4, window_size=(2, 4), first_shifted=first_shifted)
    group = randomize_(group, seed, std=0.2).double().eval()
    gen = torch.Generator().manual_seed(seed)
    for norm in group.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.copy_(0.1 * torch.randn(norm.running_mean.shape, generator=gen, dtype=torch.float64))
            norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape, generator=gen, dtype=torch.float64))
    return group


@pytest.mark.parametrize("first_shifted", [False, True])
@pytest.mark.parametrize("size", [(7, 9), (5, 3), (4, 8)])
def test_corrected_group_equals_float64_references(size, first_shifted):
    """Spatial, channel, shifted spatial, channel blocks (windows clipped to the map), conv, skip: to 1e-10 in
    float64, at sizes that are not window multiples (and one that is)."""
    group = _random_group(0, first_shifted)
    shifts = [block.attn.fn.attention.shifts[0] for block in group.blocks[::2]]
    assert shifts == ([(1, 2), (0, 0)] if first_shifted else [(0, 0), (1, 2)])
    x = random_map(1, 2, *size, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(group(x), _group_reference(group, x), rtol=0, atol=1e-10)


def test_negative_control_the_group_reference_tells_padding_modes_apart():
    """The reference attending the zero padding (official) is not the corrected group, and it is the group whose
    spatial attentions attend it."""
    group = _random_group(2)
    x = random_map(3, 1, 7, 9, 32, dtype=torch.float64)
    with torch.no_grad():
        official_reference = _group_reference(group, x, official=True)
        assert max_diff(group(x), official_reference) > 1e-3
        for module in group.modules():
            if isinstance(module, RectangleWindowAttention):
                module.zero_padding_multiple = 4
        torch.testing.assert_close(group(x), official_reference, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------
# (d) parameter counts

# measured on the official code (zhengchen1999/DAT, basicsr/archs/dat_arch.py, options/Test/*.yml configurations)
OFFICIAL_COUNTS = {("dat", 4): 14_802_051, ("dat_s", 2): 11_064_419, ("dat_2", 3): 11_249_059,
                   ("dat_light", 4): 572_766}


def _count(config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in DAT(config).parameters())


@pytest.mark.parametrize("preset, scale", sorted(OFFICIAL_COUNTS))
def test_parameter_counts_of_the_released_models(preset, scale):
    assert _count(dat_config(scale, preset)) == OFFICIAL_COUNTS[preset, scale]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_parameter_counts_equal_the_official_codes_stored_ones(preset, scale, fixture):
    """The counts tools/make_official_fixtures.py --dat read off the official code."""
    assert _count(dat_config(scale, preset)) == fixture["parameter_counts"][f"{preset}_x{scale}"]


@needs_dat
@pytest.mark.filterwarnings("ignore:torch.meshgrid")
def test_state_dict_keys_shapes_and_buffers_equal_the_official_code():
    """Every preset at x2/x3/x4 against the official model built now: the same keys with the same shapes, and
    the same offsets, indices and masks."""
    for preset in PRESETS:
        for scale in (2, 3, 4):
            config = dat_config(scale, preset)
            official = _official(config).state_dict()
            ours = to_layout(DAT(config), dat_layout.OFFICIAL)
            assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official.items()}
            for key, value in official.items():
                if key.endswith(("rpe_biases", "relative_position_index", "attn_mask_0", "attn_mask_1")):
                    assert torch.equal(ours[key].to(value.dtype), value), key


@needs_dat
@pytest.mark.filterwarnings("ignore:torch.meshgrid")
def test_the_official_code_loads_our_layout_strictly():
    model = randomize_(DAT(dat_config(2, "tiny", numerics="official", image_skip=False)), 1, 0.05).eval()
    official = _official(model.config)
    official.load_state_dict(to_layout(model, dat_layout.OFFICIAL), strict=True)
    x = torch.rand(1, 3, 13, 22)
    with torch.no_grad():
        assert max_diff(model(x), official(x)) <= 1e-5


# ---------------------------------------------------------------------------------------------------------
# (e) layout round trip, files


def test_official_layout_round_trip_is_bit_exact():
    model = randomize_(DAT(dat_config(3, "tiny")), 0, 0.1)
    official = to_layout(model, dat_layout.OFFICIAL)
    block = "layers.1.blocks.0"
    assert f"{block}.attn.attn_mask_0" in official and "layers.0.blocks.0.attn.attn_mask_0" not in official
    assert official[f"{block}.attn.attns.1.rpe_biases"][0].tolist() == [-15.0, -3.0]  # 16x4: offsets from (1-h, 1-w)
    assert "before_RG.1.weight" in official and "layers.0.blocks.1.attn.temperature" in official
    assert "layers.0.blocks.1.ffn.sg.conv.weight" in official and "layers.0.blocks.1.norm2.weight" in official
    back = from_layout(model, official, dat_layout.OFFICIAL)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("numerics", ["corrected", "official"])
def test_save_and_load_keep_configuration_and_outputs(tmp_path, suffix, numerics):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    config = dat_config(4, "tiny", numerics=numerics, window_size=(8, 4), resi_connection="3conv")
    model = randomize_(DAT(config), 3, 0.05).eval()
    path = tmp_path / f"dat{suffix}"
    save_model(model, path)
    loaded = load_model(path)
    assert isinstance(loaded, DAT) and loaded.config == model.config
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------------------------------------------------
# (f) strict loading, configurations


def test_strict_loading_names_every_key_problem():
    name = "x2_w4x8_16x24"
    state = official_state(name)
    broken = dict(state)
    del broken["layers.1.blocks.1.attn.temperature"]
    broken["layers.0.blocks.0.attn.extra.weight"] = torch.zeros(1)
    broken["conv_last.bias"] = torch.zeros(4)
    broken["layers.0.blocks.2.attn.attn_mask_1"] = state["layers.0.blocks.2.attn.attn_mask_1"].flip(0)
    with pytest.raises(CheckpointError) as error:
        load_model({"params": broken})
    message = str(error.value)
    assert "missing (1): layers.1.blocks.1.attn.temperature" in message
    assert "unexpected (1): layers.0.blocks.0.attn.extra.weight" in message
    assert "conv_last.bias: checkpoint (4,), model expects (3,)" in message
    assert "layers.0.blocks.2.attn.attn_mask_1: its values differ from those the configuration gives" in message
    with pytest.raises(CheckpointError, match="x2 model, but scale 4 was requested"):
        load_model(state, scale=4)
    with pytest.raises(CheckpointError, match="cannot read DAT's window size"):
        load_model({k: v for k, v in state.items() if "rpe_biases" not in k}, arch="dat")


def test_files_without_masks_load_and_give_the_same_outputs(fixture):
    """The masks hold no weights (the official code builds them for other sizes itself): a file without them
    loads with img_size 64, and its outputs do not change."""
    name = "x2_w4x8_odd_13x21"
    state = {k: v for k, v in official_state(name).items() if "attn_mask" not in k}
    model = load_model({"params": state})
    assert model.config.img_size == 64
    with torch.no_grad():
        out = model(input_of(name))
    expected = fixture["outputs"][name]
    assert max_diff(out, expected) <= RELATIVE_TOLERANCE * expected.abs().max().item()


@pytest.mark.parametrize("changes, message", [
    (dict(num_heads=(3,) * 6), "num_heads must be even"),
    (dict(window_size=(8, 12)), "the shorter must divide"),
    (dict(img_size=48), "img_size 48 must be a multiple of both window sides"),
    (dict(resi_connection="identity"), "resi_connection must be one of"),
    (dict(embed_dim=12, num_heads=(2,) * 6), "embed_dim must be at least 16"),
    (dict(window_size=8), "window_size must be a pair"),
])
def test_configurations_the_official_code_cannot_build_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        dat_config(4, "dat", **changes)


# ---------------------------------------------------------------------------------------------------------
# (g) detection


def test_detection_tells_dat_from_the_other_architectures():
    with torch.device("meta"):
        dat = to_layout(DAT(dat_config(4, "dat")), dat_layout.OFFICIAL)
        light = to_layout(DAT(dat_config(2, "dat_light")), dat_layout.OFFICIAL)
    assert detect_architecture(dat).name == "dat" and detect_architecture(light).name == "dat"
    assert detect_architecture(official_state("gray_x4_w4x4_8x12")).name == "dat"
    others = {"swinir": to_layout(SwinIR(swinir_config(2, "tiny")), swinir_layout.OFFICIAL),
              "hat": to_layout(HAT(hat_config(2, "tiny")), hat_layout.OFFICIAL),
              "hmanet": to_layout(HMANet(hmanet_config(2, "tiny")), hmanet_layout.OFFICIAL)}
    for name, state in others.items():
        assert detect_architecture(state).name == name
    assert isinstance(load_model({"params": official_state("x2_w4x8_16x24")}), DAT)


# ---------------------------------------------------------------------------------------------------------
# (h) any input size


@functools.cache
def _tiny(scale: int, numerics: str) -> DAT:
    return randomize_(DAT(dat_config(scale, "tiny", numerics=numerics)), scale, 0.05).eval()


@settings(max_examples=at_least(30))
@given(height=st.integers(1, 20), width=st.integers(1, 20), scale=st.sampled_from([2, 3, 4]),
       numerics=st.sampled_from(["corrected", "official"]), seed=st.integers(0, 2**31 - 1))
def test_any_input_size(height, width, scale, numerics, seed):
    """Output ``scale * (H, W)``, finite; a batch of two equals the two single forwards (to 1e-5)."""
    model = _tiny(scale, numerics)
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = model(x)
        singles = torch.cat([model(x[:1]), model(x[1:])])
    assert out.shape == (2, 3, scale * height, scale * width) and torch.isfinite(out).all()
    torch.testing.assert_close(out, singles, rtol=0, atol=1e-5)
