"""SwinIR: official outputs (fixture made by the official code), corrected numerics against float64 references,
parameter counts, the official layout, files, strict loading, detection and any input size.

The official code (``JingyunLiang/SwinIR``) is used where a checkout is at hand ($SWINIR_CHECKOUT, default
/work/checkouts/JingyunLiang+SwinIR); without one those comparisons skip, and the fixture
(``tests/fixtures/official_swinir_outputs.pt``, made by ``tools/make_official_fixtures.py --swinir CHECKOUT``)
carries the official outputs.
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
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from official import max_diff, same_weights
from official_cases_swinir import CASES, FIXTURE, MULTIPLE, ODD, config_of, input_of
from official_cases_swinir import official_state as _official_state
from strategies import random_map, randomize_

from gridattn.blocks import RSTB
from gridattn.blocks.reconstruction import upsampler_scales
from gridattn.models import (
    CheckpointError,
    HMANet,
    LayoutAssumedWarning,
    SwinIR,
    SwinIRConfig,
    load_model,
    save_model,
    swinir_config,
)
from gridattn.models.files import detect_architecture
from gridattn.models.layout import to_layout
from gridattn.models.swinir import PRESETS
from gridattn.models.swinir_layout import OFFICIAL

FIXTURES = Path(__file__).parent / "fixtures"
SWINIR_CHECKOUT = Path(os.environ.get("SWINIR_CHECKOUT", "/work/checkouts/JingyunLiang+SwinIR"))
needs_swinir = pytest.mark.skipif(not (SWINIR_CHECKOUT / "models" / "network_swinir.py").is_file(),
                                  reason=f"no checkout of JingyunLiang/SwinIR at {SWINIR_CHECKOUT} "
                                         "(set SWINIR_CHECKOUT)")
RELATIVE_TOLERANCE = 1e-5
"""Official numerics vs the official outputs, float32: max |diff| <= this times max |official output| (measured:
at most 1.8e-6 relative, 3.9e-6 absolute, over all cases)."""


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURES / FIXTURE, weights_only=True)


@functools.cache
def _cached_state(name: str) -> dict[str, torch.Tensor]:
    return _official_state(name)


def official_state(name: str) -> dict[str, torch.Tensor]:
    """The case's official-layout weights (generated once per case; a fresh dict, the tensors shared: read-only)."""
    return dict(_cached_state(name))


@functools.cache
def _official_arch() -> types.ModuleType:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from official_reference import load_swinir_arch

    return load_swinir_arch(SWINIR_CHECKOUT)


def _official(config: SwinIRConfig) -> torch.nn.Module:
    arch = _official_arch()  # puts tools/ on the path
    from official_reference import official_swinir

    return official_swinir(arch, config)


# ---------------------------------------------------------------------------------------------------------
# (a), (b) official outputs; corrected numerics


def test_cases_cover_every_upsampler_odd_sizes_and_restoration():
    configs = [config_of(name) for name in CASES]
    assert {(c.upsampler, c.scale) for c in configs} >= {
        ("pixelshuffle", 2), ("pixelshuffle", 3), ("pixelshuffle", 4), ("pixelshuffle", 8),
        ("pixelshuffledirect", 3), ("nearest+conv", 2), ("nearest+conv", 4), ("none", 1)}
    assert {c.resi_connection for c in configs} == {"1conv", "3conv"}
    assert {(c.in_channels, c.img_range, c.window_size) for c in configs if c.scale == 1} == {
        (1, 1.0, 8), (3, 1.0, 4), (1, 255.0, 7), (3, 255.0, 7)}
    for name in ODD:  # every odd case has its window-multiple twin
        size, window = CASES[name]["size"], config_of(name).window_size
        assert size[0] % window and size[1] % window
        assert any(CASES[other]["config"] == CASES[name]["config"] for other in MULTIPLE)
    assert config_of("classical_x4_16x16") == swinir_config(4, numerics="official")


@pytest.mark.parametrize("blocks", [False, True], ids=["whole", "memory-bounded"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_official_numerics_reproduce_the_official_code(name, blocks, fixture):
    """Loaded from the official state dict through ``load_model`` (configuration inferred from the shapes and
    the stored masks), official numerics give the official outputs to RELATIVE_TOLERANCE of their magnitude.
    ``blocks``: every attention builds its bias for a few score entries at a time (max_scores=64)."""
    model = load_model({"params": official_state(name)})
    assert isinstance(model, SwinIR) and model.config == config_of(name) and not model.training
    if blocks:
        for module in model.modules():
            if hasattr(module, "max_scores"):
                module.max_scores = 64
    expected = fixture[name]
    with torch.no_grad():
        out = model(input_of(name))
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert max_diff(out, expected) <= RELATIVE_TOLERANCE * expected.abs().max().item()


@pytest.mark.parametrize("name", ODD)
def test_corrected_numerics_differ_from_the_official_outputs_at_odd_sizes(name, fixture):
    """Negative control: at sizes that are not window multiples the official forward pads the image by
    reflection (every layer, convolutions included, sees the mirrored rows), corrected numerics pad nothing
    and mask the attention's padding. Measured: 0.1 to 2.5 apart, against a tolerance of ~1e-5."""
    model = same_weights(load_model({"params": official_state(name)}), numerics="corrected")
    expected = fixture[name]
    with torch.no_grad():
        out = model(input_of(name))
    assert max_diff(out, expected) > 1e3 * RELATIVE_TOLERANCE * expected.abs().max().item()


@pytest.mark.parametrize("name", MULTIPLE)
def test_corrected_numerics_equal_the_official_ones_at_window_multiples(name, fixture):
    """At window multiples nothing is padded and the shifted-window masks mark the same token pairs; the modes
    differ only in the masked score, -100 vs -inf. With these weights the scores stay far below 100, so
    exp(-100 + s) vanishes beside the unmasked terms: the outputs are bit-equal (and so as close to the fixture
    as official numerics are). test_the_minus_100_mask_leaks_once_scores_approach_100 shows where they part."""
    official = load_model({"params": official_state(name)})
    corrected = same_weights(official, numerics="corrected")
    x = input_of(name)
    with torch.no_grad():
        out = corrected(x)
        assert torch.equal(out, official(x))
    assert max_diff(out, fixture[name]) <= RELATIVE_TOLERANCE * fixture[name].abs().max().item()


def test_the_minus_100_mask_leaks_once_scores_approach_100():
    """The one difference at window multiples: with large query/key weights (scores of several hundred)
    the official -100 no longer masks the shifted windows' pairs, the exact -inf does; with ordinary weights
    both give the same result. (Measured: equal at 20x these qkv weights, 43 apart at 50x, 110 at 100x.)"""
    official = RSTB(16, depth=2, num_heads=2, window_size=4, mask_value=-100.0).eval()
    randomize_(official, 0, 0.2)
    corrected = RSTB(16, depth=2, num_heads=2, window_size=4).eval()
    corrected.load_state_dict(official.state_dict())
    x = random_map(0, 1, 8, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(corrected(x), official(x), rtol=0, atol=1e-6)
        for model in (official, corrected):
            model.blocks[1].attn.fn.qkv.weight.mul_(100)
        assert max_diff(corrected(x), official(x)) > 1.0


# ---------------------------------------------------------------------------------------------------------
# (c) corrected numerics at odd sizes against float64 references (windows clipped to the map)


def _conv(x: torch.Tensor, module) -> torch.Tensor:
    """A residual convolution ('1conv' or '3conv') on channels-last maps, by explicit shifted sums."""
    if isinstance(module, torch.nn.Conv2d):
        return reference.conv2d_same(x, module)
    first, _, middle, _, last = module
    x = F.leaky_relu(reference.conv2d_same(x, first), 0.2)
    x = F.leaky_relu(reference.conv2d_same(x, middle), 0.2)
    return reference.conv2d_same(x, last)


def _rstb(rstb: RSTB, x: torch.Tensor) -> torch.Tensor:
    """``x + conv(blocks(x))``; each block ``x + W-MSA(LN(x))`` (windows clipped to the map, shifted ones start
    at ``shift - window``), then ``x + MLP(LN(x))``."""
    x = x.double()
    y = x
    for block in rstb.blocks:
        y = reference.pre_norm(block.attn, y, reference.window_attention)
        y = reference.pre_norm(block.mlp, y, reference.mlp)
    return x + _conv(y, rstb.conv)


@pytest.mark.parametrize("resi_connection", ["1conv", "3conv"])
@pytest.mark.parametrize("size", [(13, 21), (5, 3), (8, 12)])
def test_corrected_rstb_equals_the_float64_reference(size, resi_connection):
    rstb = RSTB(24, depth=2, num_heads=3, window_size=4, resi_connection=resi_connection).double().eval()
    randomize_(rstb, 0, 0.2)
    assert [b.attn.fn.shift for b in rstb.blocks] == [(0, 0), (2, 2)]
    x = random_map(1, 2, *size, 24, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rstb(x), _rstb(rstb, x), rtol=1e-9, atol=1e-9)


def _swinir(model: SwinIR, image: torch.Tensor) -> torch.Tensor:
    """SwinIR without any padding: normalise, conv_first, LN, RSTBs (references), LN, conv_after_body + skip,
    then the model's own reconstruction (convolutions and pixel shuffles, no attention), denormalise."""
    c = model.config
    mean = model.rgb_mean.double()
    x = ((image.double() - mean) * c.img_range).permute(0, 2, 3, 1)
    features = reference.conv2d_same(x, model.conv_first)
    y = reference.layer_norm(features, model.embed_norm)
    for rstb in model.layers:
        y = _rstb(rstb, y)
    y = _conv(reference.layer_norm(y, model.norm), model.conv_after_body) + features
    out = model.reconstruction(y.permute(0, 3, 1, 2), x.permute(0, 3, 1, 2))
    return out / c.img_range + mean


@pytest.mark.parametrize("name", ["ps_x2_odd_13x21", "nearest_x2_odd_13x21", "3conv_x2_odd_13x21",
                                  "jpeg_gray_odd_11x17"])
def test_corrected_swinir_at_an_odd_size_equals_the_unpadded_reference(name):
    """The whole corrected model at an odd size is the model on the map as it is: convolutions zero-padded at
    the true border, windows clipped to the map; the official reflection padding is the negative control."""
    official = load_model({"params": official_state(name)}).double()
    corrected = same_weights(official, numerics="corrected").double()
    image = input_of(name).double()
    with torch.no_grad():
        expected = _swinir(corrected, image)
        torch.testing.assert_close(corrected(image), expected, rtol=1e-9, atol=1e-9)
        assert max_diff(official(image), expected) > 1e-3


# ---------------------------------------------------------------------------------------------------------
# (d) parameter counts

PRESET_SCALES = [(preset, scale) for preset, config in PRESETS.items() for scale in upsampler_scales(config.upsampler)]
MEASURED = {  # counted on the official code (network_swinir.py) by the lead; not computed from gridattn
    ("classical", 4): 11_900_199, ("classical", 2): 11_752_487, ("lightweight", 3): 918_267,
    ("realworld", 4): 11_715_559, ("realworld_large", 4): 28_013_059, ("denoise_gray", 1): 11_497_681,
    ("jpeg_color", 1): 11_492_067,
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset, scale", sorted(MEASURED))
def test_parameter_counts_of_the_released_models(preset, scale):
    with torch.device("meta"):
        model = SwinIR(swinir_config(scale, preset))
    assert _count(model) == MEASURED[preset, scale]
    assert all(p.requires_grad for p in model.parameters())


@needs_swinir
@pytest.mark.parametrize("preset, scale", PRESET_SCALES)
def test_parameter_counts_and_keys_equal_the_official_code(preset, scale):
    """Every preset at every scale it supports: the official model with the same hyper-parameters has as many
    parameters, its state dict the same keys and shapes as our official layout (buffers included), and its
    keys are detected as SwinIR's."""
    config = swinir_config(scale, preset)
    official = _official(config)
    with torch.device("meta"):
        ours = SwinIR(config)
    assert _count(ours) == _count(official)
    shapes = {k: tuple(v.shape) for k, v in to_layout(ours, OFFICIAL).items()}
    assert shapes == {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert detect_architecture(official.state_dict()).name == "swinir"


# ---------------------------------------------------------------------------------------------------------
# (e) layout round trip, files


@pytest.mark.parametrize("name", MULTIPLE)
def test_official_layout_round_trip_is_bit_exact(name):
    state = official_state(name)
    back = to_layout(load_model({"params": state}), OFFICIAL)
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    assert any(k.endswith("attn_mask") for k in back) and any(k.endswith("relative_position_index") for k in back)


@needs_swinir
@pytest.mark.parametrize("name", ["ps_x2_16x24", "3conv_x2_16x24", "jpeg_color_14x21"])
def test_the_official_code_loads_its_buffers_from_our_layout(name):
    """The buffers we write are the official code's own: its strict load takes them and they equal its own."""
    config = config_of(name)
    official = _official(config)
    ours = to_layout(SwinIR(config), OFFICIAL)
    for key, value in official.state_dict().items():
        if key.endswith(("attn_mask", "relative_position_index")):
            assert torch.equal(ours[key], value), key
    official.load_state_dict(ours, strict=True)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("numerics", ["official", "corrected"])
def test_save_and_load_keep_configuration_and_outputs(tmp_path, suffix, numerics):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    name = "3conv_x2_odd_13x21"
    model = same_weights(load_model({"params": official_state(name)}), numerics=numerics)
    path = tmp_path / f"model{suffix}"
    save_model(model, path)
    loaded = load_model(path)
    assert isinstance(loaded, SwinIR) and loaded.config == model.config
    x = input_of(name, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert to_layout(loaded, OFFICIAL).keys() == official_state(name).keys()


# ---------------------------------------------------------------------------------------------------------
# (f) strict loading


def test_strict_loading_names_every_key_problem():
    state = official_state("ps_x2_16x24")
    broken = dict(state)
    del broken["layers.1.residual_group.blocks.0.attn.proj.weight"]
    broken["layers.0.residual_group.extra.weight"] = torch.zeros(2)
    broken["conv_last.bias"] = torch.zeros(4)
    mask = "layers.1.residual_group.blocks.1.attn_mask"
    broken[mask] = torch.where(state[mask] == 0, -100.0, 0.0)  # same shape, not the configuration's mask
    with pytest.raises(CheckpointError) as error:
        load_model({"params": broken})
    message = str(error.value)
    assert "missing (1): layers.1.residual_group.blocks.0.attn.proj.weight" in message
    assert "unexpected (1): layers.0.residual_group.extra.weight" in message
    assert "conv_last.bias: checkpoint (4,), model expects (3,)" in message
    assert f"{mask}: its values differ from those the configuration gives" in message
    with pytest.raises(CheckpointError, match="x2 model, but scale 4 was requested"):
        load_model({"params": state}, scale=4)


def test_a_file_without_the_buffers_loads_to_the_same_outputs(fixture):
    """The index tables and masks hold no weights (the official code computes masks of other sizes afresh):
    a file without them loads, as ``img_size`` 64, and gives the official outputs."""
    name = "ps_x2_16x24"
    state = {k: v for k, v in official_state(name).items()
             if not k.endswith(("attn_mask", "relative_position_index"))}
    model = load_model({"params": state}).eval()
    assert model.config.img_size == 64
    with torch.no_grad():
        torch.testing.assert_close(model(input_of(name)), fixture[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("img_size, window", [(60, 8), (8, 8), (4, 8), (20, 7)])
def test_img_sizes_the_official_code_cannot_build_are_refused(img_size, window):
    with pytest.raises(ValueError, match=f"img_size {img_size} must be a multiple of window_size {window} above"):
        swinir_config(2, "tiny", img_size=img_size, window_size=window)


def test_a_mask_of_another_training_size_is_read_as_that_size():
    """``img_size`` comes from the stored masks: a file trained on 48-pixel patches (SwinIR's s48 releases)
    is read as img_size 48, and its masks then agree."""
    config = swinir_config(2, "tiny", image_skip=False, drop_path_rate=0.1, numerics="official", img_size=48)
    state = to_layout(SwinIR(config), OFFICIAL)
    assert state["layers.0.residual_group.blocks.1.attn_mask"].shape == (36, 64, 64)
    assert load_model(state).config == config


# ---------------------------------------------------------------------------------------------------------
# (g) detection


def test_detection_tells_swinir_from_hmanet_and_hat():
    """(The official code's own state dicts of every preset are detected in
    test_parameter_counts_and_keys_equal_the_official_code.)"""
    from official_cases import official_state as hmanet_state
    from official_cases_hat import official_state as hat_state

    for name in ("ps_x2_16x24", "denoise_gray_16x24", "3conv_x2_16x24", "classical_x4_16x16"):
        assert detect_architecture(official_state(name)).name == "swinir"
    hmanet = hmanet_state("x2_reduced_16x24")
    assert detect_architecture(hmanet).name == "hmanet"
    with pytest.warns(LayoutAssumedWarning):  # a reduced HMANet could be neosr's: the official layout assumed
        assert isinstance(load_model({"params_ema": hmanet}), HMANet)
    assert detect_architecture(hat_state("hat_s_x4_16x16")).name == "hat"


# ---------------------------------------------------------------------------------------------------------
# (h) any input size


@functools.cache
def _tiny(scale: int, numerics: str) -> SwinIR:
    return randomize_(SwinIR(swinir_config(scale, "tiny", numerics=numerics)), scale, 0.05).eval()


@given(height=st.integers(1, 20), width=st.integers(1, 20), scale=st.sampled_from([2, 3, 4]),
       numerics=st.sampled_from(["corrected", "official"]), seed=st.integers(0, 2**31 - 1))
def test_any_input_size(height, width, scale, numerics, seed):
    """Output ``scale * (H, W)``, finite, and a batch of two equals the two images run alone."""
    model = _tiny(scale, numerics)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, height, width, generator=gen)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 3, scale * height, scale * width) and torch.isfinite(out).all()
        alone = torch.cat([model(x[:1]), model(x[1:])])
    torch.testing.assert_close(out, alone, rtol=0, atol=1e-5)
