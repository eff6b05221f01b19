"""SwinIR against the official code (outputs stored by tools/make_official_fixtures.py --swinir), its layout and
configuration inference, both numerics modes."""

import warnings
from pathlib import Path

import pytest
import torch
from official_cases_swinir import CASES, FIXTURE, MULTIPLE, ODD, config_of, input_of, official_state

from gridattn.models import CheckpointError, SwinIR, load_model, save_model, swinir_config
from gridattn.models.files import detect_architecture
from gridattn.models.layout import to_layout
from gridattn.models.swinir_layout import OFFICIAL

OUTPUTS = torch.load(Path(__file__).parent / "fixtures" / FIXTURE, weights_only=True)


def _official_file(name):
    return {"params": official_state(name)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_official_numerics_reproduce_the_official_code(name):
    """Loaded through load_model (architecture and configuration read off the keys and shapes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one layout only: nothing to assume
        model = load_model(_official_file(name))
    assert model.config == config_of(name).replace(drop_path_rate=0.1)  # not in the weights: the default
    with torch.no_grad():
        out = model(input_of(name))
    expected = OUTPUTS[name]
    assert out.shape == expected.shape
    assert (out - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item()), name


@pytest.mark.parametrize("name", ODD)
def test_corrected_numerics_mask_where_the_official_pipeline_reflects(name):
    """Negative control: at sizes that are not window multiples the corrected mode (padding masked) differs
    from the official outputs (reflection padding)."""
    model = SwinIR(config_of(name).replace(numerics="corrected")).eval()
    model.load_state_dict(load_model(_official_file(name)).state_dict())
    with torch.no_grad():
        out = model(input_of(name))
    assert (out - OUTPUTS[name]).abs().max() > 1e-4


@pytest.mark.parametrize("name", MULTIPLE[:4])
def test_the_official_layout_round_trips_bit_exactly(name, tmp_path):
    state = official_state(name)
    model = load_model({"params": state})
    back = to_layout(model, OFFICIAL)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert detect_architecture(state).name == "swinir"
    x = input_of(name)
    for suffix in ("safetensors", "pth"):
        save_model(model, tmp_path / f"m.{suffix}")
        again = load_model(tmp_path / f"m.{suffix}")
        assert again.config == model.config
        with torch.no_grad():
            assert torch.equal(again(x), model(x))


def test_strict_loading_names_every_problem():
    name = MULTIPLE[0]
    state = official_state(name)
    broken = dict(state)
    del broken["conv_first.bias"]
    broken["extra.weight"] = torch.zeros(1)
    broken["layers.0.residual_group.blocks.0.mlp.fc2.weight"] = torch.zeros(3, 3)
    mask = "layers.0.residual_group.blocks.1.attn_mask"
    broken[mask] = torch.zeros_like(state[mask])
    with pytest.raises(CheckpointError) as error:
        load_model({"params": broken})
    message = str(error.value)
    for problem in ("missing (1): conv_first.bias", "unexpected (1): extra.weight", "mlp.fc2.weight: checkpoint (3, 3)",
                    f"{mask}: not what the configuration gives"):
        assert problem in message, (problem, message)


@pytest.mark.parametrize("scale, size, count", [
    # counted with the official code (models/network_swinir.py) on the released configurations
    (4, "classical", 11_900_199), (2, "classical", 11_752_487), (3, "lightweight", 918_267),
    (4, "realworld", 11_715_559), (4, "realworld_large", 28_013_059), (1, "denoise_gray", 11_497_681),
    (1, "jpeg_color", 11_492_067),
])
def test_parameter_counts_equal_the_official_ones(scale, size, count):
    with torch.device("meta"):
        model = SwinIR(swinir_config(scale, size))
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("size", [(1, 1), (7, 9), (13, 21), (16, 16)])
def test_any_size_runs_and_a_batch_equals_single_images(size):
    model = SwinIR(swinir_config(2, "tiny")).eval()
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        both = model(x)
        singles = torch.cat([model(x[:1]), model(x[1:])])
    assert both.shape == (2, 3, 2 * size[0], 2 * size[1]) and torch.isfinite(both).all()
    torch.testing.assert_close(both, singles, rtol=1e-5, atol=1e-5)
