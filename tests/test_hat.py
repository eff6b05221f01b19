"""HAT: official outputs (fixture made by the official code), corrected numerics against float64 references,
parameter counts, the official layout, files, detection and any input size.

The official code (``XPixelGroup/HAT``) is used where a checkout is at hand ($HAT_CHECKOUT, default
/work/checkouts/XPixelGroup+HAT); without one those comparisons skip, and the fixture
(``tests/fixtures/official_hat_outputs.pt``, made by ``tools/make_official_fixtures.py --hat CHECKOUT``) carries
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
from official_cases_hat import CASES, FIXTURE, MULTIPLE, ODD, config_of, input_of, official_state
from strategies import at_least, random_map, randomize_
from test_overlapping_attention import reference as oca_reference

from gridattn import OverlappingCrossAttention
from gridattn.blocks import RHAG
from gridattn.functional.position import relative_position_index
from gridattn.models import (
    HAT,
    CheckpointError,
    HMANet,
    SwinIR,
    hat_config,
    hat_layout,
    hmanet_config,
    hmanet_layout,
    load_model,
    save_model,
    swinir_config,
    swinir_layout,
)
from gridattn.models.files import detect_architecture
from gridattn.models.hat import PRESETS
from gridattn.models.layout import from_layout, to_layout

FIXTURES = Path(__file__).parent / "fixtures"
HAT_CHECKOUT = Path(os.environ.get("HAT_CHECKOUT", "/work/checkouts/XPixelGroup+HAT"))
needs_hat = pytest.mark.skipif(not (HAT_CHECKOUT / "hat" / "archs" / "hat_arch.py").is_file(),
                               reason=f"no checkout of XPixelGroup/HAT at {HAT_CHECKOUT} (set HAT_CHECKOUT)")
RELATIVE_TOLERANCE = 5e-6
"""Official numerics vs the official outputs, float32: max |diff| <= this times max |official output|
(measured: 1e-6 relative on the reduced cases, 4e-7 on HAT-S)."""


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURES / FIXTURE, weights_only=True)


@functools.cache
def _official_arch() -> types.ModuleType:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from official_reference import load_hat_arch

    return load_hat_arch(HAT_CHECKOUT)


def _official(config):
    arch = _official_arch()  # puts tools/ on the path
    from official_reference import official_hat

    return official_hat(arch, config)


# ---------------------------------------------------------------------------------------------------------
# (a), (b) official outputs; corrected numerics differ


@pytest.mark.parametrize("blocks", [False, True], ids=["whole", "memory-bounded"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_official_numerics_reproduce_the_official_code(name, blocks, fixture):
    """Loaded from the official state dict (the configuration inferred from its shapes), official numerics give
    the official outputs to RELATIVE_TOLERANCE of their magnitude. ``blocks``: every attention builds its bias for
    a few score entries at a time (max_scores=64), as on large images."""
    model = load_model({"params_ema": official_state(name)})
    assert isinstance(model, HAT) and model.config == config_of(name) and not model.training
    if blocks:
        for module in model.modules():
            if hasattr(module, "max_scores"):
                module.max_scores = 64
    expected = fixture["outputs"][name]
    with torch.no_grad():
        out = model(input_of(name))
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert max_diff(out, expected) <= RELATIVE_TOLERANCE * expected.abs().max().item()


@pytest.mark.parametrize("name", ["x3_w8_r0.5_16x24", "x4_w4_r1.0_odd_13x21", "hat_s_x4_16x16"])
def test_the_fixture_sees_the_conv_branch(name, fixture):
    """Without the CAB branch (conv_scale 0) the outputs miss the fixture by far more than the tolerance: the
    comparison above checks that branch too, although the official conv_scale is 0.01."""
    model = load_model({"params_ema": official_state(name)})
    expected = fixture["outputs"][name]
    with torch.no_grad():
        out = same_weights(model, conv_scale=0.0)(input_of(name))
    assert max_diff(out, expected) > 30 * RELATIVE_TOLERANCE * expected.abs().max().item()


@pytest.mark.parametrize("name", sorted(CASES))
def test_corrected_numerics_differ_from_the_official_outputs(name, fixture):
    """Negative control: corrected numerics (OCAB keys beyond the map masked instead of attended as zeros; no
    reflection padding at odd sizes, padding masked instead) miss the official outputs, at window multiples too.
    At window multiples the OCAB is the whole difference: letting it attend the zero keys gives them back."""
    official = load_model({"params_ema": official_state(name)})
    corrected = same_weights(official, numerics="corrected")
    expected = fixture["outputs"][name]
    x = input_of(name)
    tolerance = RELATIVE_TOLERANCE * expected.abs().max().item()
    with torch.no_grad():
        assert max_diff(corrected(x), expected) > max(1e-3, 100 * tolerance)
        if name in MULTIPLE:
            for module in corrected.modules():
                if isinstance(module, OverlappingCrossAttention):
                    module.official_padding = True
            assert max_diff(corrected(x), expected) <= tolerance


def test_cases_cover_odd_sizes_scales_windows_and_overlaps():
    configs = [config_of(name) for name in CASES]
    assert {c.scale for c in configs} == {2, 3, 4}
    assert {c.window_size for c in configs} >= {4, 8, 16}
    assert {(c.window_size, c.overlap_ratio) for c in configs} >= {(4, 0.5), (4, 1.0), (8, 0.25), (8, 0.5)}
    for name in ODD:
        c, (h, w) = config_of(name), CASES[name]["size"]
        assert h % c.window_size and w % c.window_size
    for name in MULTIPLE:
        c, (h, w) = config_of(name), CASES[name]["size"]
        assert h % c.window_size == 0 and w % c.window_size == 0


# ---------------------------------------------------------------------------------------------------------
# (c) corrected numerics: one RHAG against independent float64 references


def _hab_reference(hab, x: torch.Tensor) -> torch.Tensor:
    """``x + W-MSA(LN(x)) + conv_scale * CAB(LN(x))``, then the pre-norm MLP."""
    y = reference.layer_norm(x, hab.norm)
    x = x + reference.window_attention(hab.attn, y) + hab.conv_scale * reference.conv_channel_attention(
        hab.conv_block, y)
    return reference.pre_norm(hab.mlp, x, reference.mlp)


def _rhag_reference(rhag: RHAG, x: torch.Tensor, official: bool = False) -> torch.Tensor:
    """HABs, then the OCAB (pre-norm overlapping cross-attention, pre-norm MLP), the 3x3 conv, the long skip."""
    y = x.double()
    for hab in rhag.blocks:
        y = _hab_reference(hab, y)
    y = reference.pre_norm(rhag.overlap_attn.attn, y, lambda layer, t: oca_reference(layer, t, official))
    y = reference.pre_norm(rhag.overlap_attn.mlp, y, reference.mlp)
    return x.double() + reference.conv2d_same(y, rhag.conv)


def _random_rhag(seed: int) -> RHAG:
    rhag = RHAG(12, depth=2, num_heads=3, window_size=4, overlap_ratio=0.5, compress_ratio=3, squeeze_factor=4,
                conv_scale=0.5)
    return randomize_(rhag, seed, std=0.3).double().eval()


@pytest.mark.parametrize("size", [(9, 11), (5, 7), (4, 8)])
def test_corrected_rhag_equals_float64_references(size):
    """W-MSA then SW-MSA with a CAB branch each (windows clipped to the map), the OCAB with the keys beyond the
    map masked, conv, skip: to 1e-10 in float64, at sizes that are not window multiples (and one that is)."""
    rhag = _random_rhag(0)
    assert [block.attn.shift for block in rhag.blocks] == [(0, 0), (2, 2)]
    x = random_map(1, 2, *size, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rhag(x), _rhag_reference(rhag, x), rtol=0, atol=1e-10)


def test_negative_control_the_rhag_reference_tells_ocab_modes_apart():
    """The reference with the OCAB attending zero keys (official) is not the corrected RHAG, and it is the RHAG
    whose OCAB attends them."""
    rhag = _random_rhag(2)
    x = random_map(3, 1, 9, 11, 12, dtype=torch.float64)
    with torch.no_grad():
        official_reference = _rhag_reference(rhag, x, official=True)
        assert max_diff(rhag(x), official_reference) > 1e-3
        rhag.overlap_attn.attn.fn.official_padding = True
        torch.testing.assert_close(rhag(x), official_reference, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------
# (d) parameter counts

# measured on the official code (XPixelGroup/HAT, hat/archs/hat_arch.py, options/test/*.yml configurations)
OFFICIAL_COUNTS = {("hat", 4): 20_772_507, ("hat_s", 2): 9_473_471, ("hat_l", 3): 40_883_503}


def _count(config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in HAT(config).parameters())


@pytest.mark.parametrize("preset, scale", sorted(OFFICIAL_COUNTS))
def test_parameter_counts_of_the_released_models(preset, scale):
    assert _count(hat_config(scale, preset)) == OFFICIAL_COUNTS[preset, scale]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_parameter_counts_equal_the_official_codes_stored_ones(preset, scale, fixture):
    """The counts tools/make_official_fixtures.py --hat read off the official code."""
    assert _count(hat_config(scale, preset)) == fixture["parameter_counts"][f"{preset}_x{scale}"]


@needs_hat
@pytest.mark.filterwarnings("ignore:torch.meshgrid")
def test_parameter_counts_and_keys_equal_the_official_code():
    """Every preset at x2/x3/x4 against the official model built now: same count, the same state-dict keys with
    the same shapes; the three released counts above too."""
    for preset in PRESETS:
        for scale in (2, 3, 4):
            config = hat_config(scale, preset)
            official = _official(config).state_dict()
            with torch.device("meta"):
                ours = to_layout(HAT(config), hat_layout.OFFICIAL)
            assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official.items()}
            count = sum(v.numel() for k, v in official.items() if not k.startswith("relative_position_index"))
            assert _count(config) == count, (preset, scale)
            if (preset, scale) in OFFICIAL_COUNTS:
                assert count == OFFICIAL_COUNTS[preset, scale]


# ---------------------------------------------------------------------------------------------------------
# (e) layout round trip, index buffers, files


def test_official_layout_round_trip_is_bit_exact():
    model = randomize_(HAT(hat_config(3, "tiny")), 0, 0.1)
    official = to_layout(model, hat_layout.OFFICIAL)
    first = "layers.0.residual_group"
    assert official[f"{first}.blocks.0.conv_block.cab.3.attention.1.weight"].dim() == 4
    assert f"{first}.overlap_attn.relative_position_bias_table" in official
    assert f"{first}.blocks.1.norm1.weight" in official and "patch_embed.norm.weight" in official
    assert torch.equal(official["relative_position_index_SA"], relative_position_index(8))
    assert torch.equal(official["relative_position_index_OCA"], hat_layout.overlapping_index(8, 0.5))
    assert official["relative_position_index_OCA"].shape == (64, 144)
    assert official["relative_position_index_OCA"].min() < 0  # as HAT's: some rows wrap round
    back = from_layout(model, official, hat_layout.OFFICIAL)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


@needs_hat
@pytest.mark.filterwarnings("ignore:torch.meshgrid")
@pytest.mark.parametrize("window", [2, 3, 4, 5, 7, 8, 16])
@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_index_buffers_are_the_official_ones(window, ratio):
    """``overlapping_index`` equals HAT's ``calculate_rpi_oca`` (negative entries included) and the SA index its
    ``calculate_rpi_sa``."""
    official = _official_arch().HAT
    owner = types.SimpleNamespace(window_size=window, overlap_ratio=ratio)
    assert torch.equal(hat_layout.overlapping_index(window, ratio), official.calculate_rpi_oca(owner))
    assert torch.equal(relative_position_index(window), official.calculate_rpi_sa(owner))


@needs_hat
@pytest.mark.filterwarnings("ignore:torch.meshgrid")
def test_the_official_code_loads_our_layout_strictly():
    model = randomize_(HAT(hat_config(2, "tiny", numerics="official", image_skip=False)), 1, 0.05).eval()
    official = _official(model.config)
    official.load_state_dict(to_layout(model, hat_layout.OFFICIAL), strict=True)
    x = torch.rand(1, 3, 16, 8)
    with torch.no_grad():
        assert max_diff(model(x), official(x)) <= 1e-5


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("numerics", ["corrected", "official"])
def test_save_and_load_keep_configuration_and_outputs(tmp_path, suffix, numerics):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    config = hat_config(4, "tiny", numerics=numerics, overlap_ratio=1.0, conv_scale=0.3, window_size=4)
    model = randomize_(HAT(config), 3, 0.05).eval()
    path = tmp_path / f"hat{suffix}"
    save_model(model, path)
    loaded = load_model(path)
    assert isinstance(loaded, HAT) and loaded.config == model.config
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------------------------------------------------
# (f) strict loading


def test_strict_loading_names_every_key_problem():
    name = "x2_w4_r0.5_16x24"
    state = official_state(name)
    broken = dict(state)
    del broken["layers.1.residual_group.overlap_attn.proj.weight"]
    broken["layers.0.residual_group.extra.weight"] = torch.zeros(1)
    broken["conv_last.bias"] = torch.zeros(4)
    broken["layers.0.residual_group.blocks.1.attn.relative_position_bias_table"] = torch.zeros(48, 2)
    oca = broken["relative_position_index_OCA"]
    broken["relative_position_index_OCA"] = oca.flip(0)  # a plausible but wrong index: same shape and values
    with pytest.raises(CheckpointError) as error:
        load_model({"params_ema": broken})
    message = str(error.value)
    assert "missing (1): layers.1.residual_group.overlap_attn.proj.weight" in message
    assert "unexpected (1): layers.0.residual_group.extra.weight" in message
    assert "conv_last.bias: checkpoint (4,), model expects (3,)" in message
    assert ("layers.0.residual_group.blocks.1.attn.relative_position_bias_table: checkpoint (48, 2), model "
            "expects (49, 2)") in message
    assert "relative_position_index_OCA: its values differ from those the configuration gives" in message
    assert "relative_position_index_SA" not in message

    wrong_sa = dict(state, relative_position_index_SA=state["relative_position_index_SA"].T.contiguous())
    with pytest.raises(CheckpointError, match="relative_position_index_SA: its values differ"):
        load_model(wrong_sa)
    with pytest.raises(CheckpointError, match="x2 model, but scale 4 was requested"):
        load_model(state, scale=4)
    with pytest.raises(CheckpointError, match="not a HAT checkpoint"):
        load_model({k: v for k, v in state.items() if ".conv_block.cab.0." not in k}, arch="hat")
    nan = dict(state)
    nan["conv_first.bias"] = torch.full_like(state["conv_first.bias"], float("nan"))
    with pytest.raises(CheckpointError, match="NaN or infinite weights in: conv_first.bias"):
        load_model(nan)


# ---------------------------------------------------------------------------------------------------------
# (g) detection


def test_detection_tells_hat_swinir_and_hmanet_apart():
    with torch.device("meta"):
        hat = to_layout(HAT(hat_config(4, "hat")), hat_layout.OFFICIAL)
    assert detect_architecture(hat).name == "hat"
    assert detect_architecture(official_state("hat_s_x4_16x16")).name == "hat"
    assert detect_architecture(official_state("gray_x2_w4_r0.5_8x12")).name == "hat"
    swinir = to_layout(SwinIR(swinir_config(2, "tiny")), swinir_layout.OFFICIAL)
    assert detect_architecture(swinir).name == "swinir"
    hmanet = to_layout(HMANet(hmanet_config(2, "tiny")), hmanet_layout.OFFICIAL)
    assert detect_architecture(hmanet).name == "hmanet"
    # and load_model picks the architecture from the keys alone
    assert isinstance(load_model({"params_ema": official_state("x2_w4_r0.5_16x24")}), HAT)
    assert isinstance(load_model({"params": swinir}), SwinIR)


# ---------------------------------------------------------------------------------------------------------
# (h) any input size


@functools.cache
def _tiny(scale: int, numerics: str) -> HAT:
    return randomize_(HAT(hat_config(scale, "tiny", numerics=numerics)), scale, 0.05).eval()


@settings(max_examples=at_least(30))
@given(height=st.integers(1, 20), width=st.integers(1, 20), scale=st.sampled_from([2, 3, 4]),
       numerics=st.sampled_from(["corrected", "official"]), seed=st.integers(0, 2**31 - 1))
def test_any_input_size(height, width, scale, numerics, seed):
    """Output ``scale * (H, W)``, finite; a batch of two equals the two single forwards (to 1e-5: batched and
    single matrix products may round differently)."""
    model = _tiny(scale, numerics)
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = model(x)
        singles = torch.cat([model(x[:1]), model(x[1:])])
    assert out.shape == (2, 3, scale * height, scale * width) and torch.isfinite(out).all()
    torch.testing.assert_close(out, singles, rtol=0, atol=1e-5)
