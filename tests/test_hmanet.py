"""HMANet: official outputs (fixture made by the official code), parameter counts, checkpoints, errors."""

import os
import pickle
from pathlib import Path

import pytest
import reference
import torch
from official_cases import CASES, FIXTURE, config_of, input_of, official_state
from strategies import random_map, randomize_

from gridattn.blocks import FAB, GAB, RHTB
from gridattn.models import (
    CheckpointError,
    HMANet,
    HMANetConfig,
    from_official_state_dict,
    hmanet_config,
    load_hmanet,
    save_hmanet,
    to_official_state_dict,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def official_outputs():
    return torch.load(FIXTURES / FIXTURE, weights_only=True)


@pytest.mark.parametrize("blocks", [False, True], ids=["whole", "memory-bounded"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_official_numerics_reproduce_the_official_code_and_corrected_ones_do_not(name, blocks, official_outputs):
    """Outputs of the official implementation on the same weights (tools/make_official_fixtures.py),
    to 1e-5 in float32; the corrected numerics must differ. ``blocks``: every attention builds its bias
    for a few score entries at a time (max_scores=64), as on large images."""
    model = load_hmanet({"params_ema": official_state(name)})
    assert model.config == config_of(name) and not model.training
    if blocks:
        for module in model.modules():
            if hasattr(module, "max_scores"):
                module.max_scores = 64
    expected = official_outputs[name]
    with torch.no_grad():
        out = model(input_of(name))
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)

    corrected = HMANet(model.config.replace(numerics="corrected")).eval()
    corrected.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (corrected(input_of(name)) - expected).abs().max() > 1e-3


def test_corrected_and_official_numerics_differ_only_in_the_shifted_gab_branch():
    official = randomize_(GAB(16, num_heads=4, window_size=4, interval=2, numerics="official"), 0, 0.3)
    corrected = GAB(16, num_heads=4, window_size=4, interval=2)
    corrected.load_state_dict(official.state_dict())
    x = random_map(0, 1, 8, 12, 16)
    with torch.no_grad():
        assert (corrected(x) - official(x)).abs().max() > 1e-2
        for branch in ("window_attn", "grid_attn"):
            assert torch.equal(getattr(corrected, branch)(x), getattr(official, branch)(x))


@pytest.mark.parametrize("scale, count", [(2, 69_722_675), (3, 69_907_315), (4, 69_870_387)])
def test_parameter_counts_equal_the_official_ones(scale, count):
    model = HMANet(hmanet_config(scale))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count
    assert sum(p.numel() for p in model.parameters()) == count
    official = to_official_state_dict(model)
    assert official["relative_position_index_SA"].shape == (256, 256)
    assert official["relative_position_index_SA"].dtype == torch.int64
    if scale == 4:
        assert len(official) == 1007


def test_official_layout_round_trip_is_lossless():
    model = randomize_(HMANet(hmanet_config(3, "tiny")), 0, 0.1)
    official = to_official_state_dict(model)
    assert "layers.0.residual_group.gab.qkv.weight" in official
    assert official["layers.0.residual_group.blocks.0.conv3_1x1.weight"].dim() == 4
    back = from_official_state_dict(model, official)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


def test_params_ema_wins_over_params_and_bare_dicts_load():
    name = "x2_reduced_16x24"
    ema, raw = official_state(name, seed=0), official_state(name, seed=5)
    x = input_of(name)
    with torch.no_grad():
        from_ema = load_hmanet({"params": raw, "params_ema": ema})(x)
        assert torch.equal(from_ema, load_hmanet(ema)(x))
        assert not torch.equal(from_ema, load_hmanet({"params": raw})(x))


def test_checkpoint_errors_name_the_problem(tmp_path):
    state = official_state("x2_reduced_16x24")
    broken = dict(state)
    del broken["layers.0.residual_group.gab.fc.weight"]
    broken["layers.0.extra.weight"] = torch.zeros(1)
    broken["conv_last.bias"] = torch.zeros(4)
    with pytest.raises(CheckpointError) as error:
        load_hmanet(broken)
    message = str(error.value)
    assert "missing (1): layers.0.residual_group.gab.fc.weight" in message
    assert "unexpected (1): layers.0.extra.weight" in message
    assert "conv_last.bias: checkpoint (4,), model expects (3,)" in message
    with pytest.raises(CheckpointError, match="x2 model, but scale 4 was requested"):
        load_hmanet(state, scale=4)
    with pytest.raises(CheckpointError, match="not an HMANet checkpoint"):
        load_hmanet({"weight": torch.zeros(3)})
    with pytest.raises(FileNotFoundError):
        load_hmanet(tmp_path / "missing.pth")
    truncated = tmp_path / "truncated.pth"
    torch.save({"params_ema": state}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_hmanet(truncated)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch gridattn-pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"params_ema": _Payload()}))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_hmanet(path)
    assert not (tmp_path / "gridattn-pwned").exists()


def test_save_and_load_keep_configuration_and_numerics(tmp_path):
    model = randomize_(HMANet(hmanet_config(2, "tiny").replace(interval=2)), 1, 0.05).eval()
    path = tmp_path / "model.pth"
    save_hmanet(model, path)
    loaded = load_hmanet(path)
    assert loaded.config == model.config and loaded.config.numerics == "corrected"
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert set(torch.load(path, weights_only=True)["params_ema"]) == set(to_official_state_dict(model))


@pytest.mark.parametrize("numerics", ["corrected", "official"])
@pytest.mark.parametrize("size", [(1, 1), (7, 30), (16, 16), (17, 9), (37, 53)])
def test_any_input_size(numerics, size):
    model = HMANet(hmanet_config(3, "tiny", numerics)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, 3 * size[0], 3 * size[1]) and torch.isfinite(out).all()


def test_bad_inputs_raise_value_error():
    model = HMANet(hmanet_config(2, "tiny"))
    with pytest.raises(ValueError, match=r"3 channels \(B, C, H, W\), got 4"):
        model(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="expects images"):
        model(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="floating"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="scale"):
        HMANetConfig(scale=5)
    with pytest.raises(ValueError, match="numerics"):
        HMANetConfig(numerics="fast")


def test_every_parameter_gets_a_gradient():
    model = HMANet(hmanet_config(2, "tiny")).train()
    model(torch.rand(2, 3, 10, 12)).abs().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_fab_is_prenorm_window_attention_then_prenorm_mlp():
    fab = randomize_(FAB(8, num_heads=2, window_size=4, shift=2), 0, 0.3).double()
    x = random_map(0, 1, 7, 9, 8, dtype=torch.float64)
    y = x + reference.window_attention(fab.attn.fn, reference.layer_norm(x, fab.attn.norm))
    hidden = reference.gelu(reference.linear(reference.layer_norm(y, fab.mlp.norm), fab.mlp.fn.fc1))
    torch.testing.assert_close(fab(x), y + reference.linear(hidden, fab.mlp.fn.fc2), rtol=1e-9, atol=1e-9)


def test_corrected_gab_against_reference_branches():
    gab = randomize_(GAB(16, num_heads=4, window_size=4, interval=2), 0, 0.3).double()
    x = random_map(0, 2, 9, 11, 16, dtype=torch.float64)
    branches = torch.cat([reference.window_attention(gab.window_attn, x),
                          reference.window_attention(gab.window_attn_s, x),
                          reference.grid_attention(gab.grid_attn, x)], -1)
    y = x + reference.layer_norm(reference.linear(branches, gab.fc), gab.norm1)
    mlp = reference.linear(reference.gelu(reference.linear(y, gab.mlp.fn.fc1)), gab.mlp.fn.fc2)
    torch.testing.assert_close(gab(x), y + reference.layer_norm(mlp, gab.mlp.norm), rtol=1e-9, atol=1e-9)


def test_rhtb_structure_matches_the_official_order():
    block = RHTB(16, depth=6, num_heads=4, window_size=4, interval=2)
    kinds = [type(b).__name__ for b in block.blocks]
    assert kinds == ["FusedConv", "FAB", "FAB", "FusedConv", "FAB", "FAB", "FusedConv", "FAB", "FAB"]
    assert [b.attn.fn.shift for b in block.blocks if isinstance(b, FAB)] == [(0, 0), (2, 2)] * 3


def test_official_gab_rejects_sizes_that_are_not_multiples():
    gab = GAB(16, num_heads=4, window_size=4, interval=2, numerics="official")
    with pytest.raises(ValueError, match="multiples of 4"):
        gab(torch.rand(1, 6, 8, 16))


def test_full_x4_saves_loads_strictly_and_runs(tmp_path):
    model = HMANet(hmanet_config(4)).eval()
    path = tmp_path / "x4.pth"
    save_hmanet(model, path)
    loaded = load_hmanet(path, scale=4)
    assert sum(p.numel() for p in loaded.parameters()) == 69_870_387
    model.load_state_dict(loaded.state_dict(), strict=True)
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        out = loaded(x)
        assert torch.equal(out, model(x)) and out.shape == (1, 3, 48, 80)


def test_safetensors_checkpoint_with_configuration(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    import dataclasses
    import json

    model = randomize_(HMANet(hmanet_config(2, "tiny")), 2, 0.05).eval()
    path = tmp_path / "model.safetensors"
    state = {k: v.contiguous() for k, v in to_official_state_dict(model).items()}
    safetensors.save_file(state, path, metadata={"gridattn_config": json.dumps(dataclasses.asdict(model.config))})
    loaded = load_hmanet(path)
    assert loaded.config == model.config
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    bare = tmp_path / "bare.safetensors"
    safetensors.save_file(state, bare)
    assert load_hmanet(bare).config.numerics == "official"


def test_bfloat16_autocast_and_compile_agree_with_eager_float32():
    """Tolerances on images in [0, 1]: autocast bfloat16 within 0.05, compiled float32 within 1e-5."""
    model = HMANet(hmanet_config(2, "tiny")).eval()
    x = torch.rand(1, 3, 12, 17)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        torch.testing.assert_close(low.float(), expected, rtol=0, atol=0.05)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager")
        torch.testing.assert_close(compiled(x), expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_inductor_compile_agrees_with_eager():
    model = HMANet(hmanet_config(2, "tiny")).eval()
    x = torch.rand(1, 3, 16, 16)
    torch._dynamo.reset()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=0, atol=1e-4)
