"""Checkpoint files from strangers: safetensors with metadata, damaged files, hostile contents."""

import json
import os
import pickle
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import at_least, randomize_

from gridattn.models import CheckpointError, HMANet, hmanet_config, load_hmanet, save_hmanet, to_official_state_dict


@pytest.fixture(scope="module")
def tiny_model():
    return randomize_(HMANet(hmanet_config(3, "tiny", "official")), 5, 0.05).eval()


@pytest.fixture(scope="module")
def saved(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {suffix: folder / f"model.{suffix}" for suffix in ("pth", "safetensors")}
    for path in paths.values():
        save_hmanet(tiny_model, path)
    return paths


@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_saved_files_give_the_same_model(tiny_model, saved, suffix):
    loaded = load_hmanet(saved[suffix])
    assert loaded.config == tiny_model.config
    x = torch.rand(1, 3, 10, 13)
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny_model(x))


def test_safetensors_metadata_names_configuration_and_numerics(tiny_model, saved):
    from safetensors import safe_open

    with safe_open(saved["safetensors"], framework="pt") as handle:
        metadata = handle.metadata()
        keys = set(handle.keys())
    assert metadata["numerics"] == "official" and metadata["scale"] == "3"
    assert json.loads(metadata["gridattn_config"])["numerics"] == "official"
    # the official layout, and the configuration as a tensor too (for loaders that drop metadata)
    assert keys == set(to_official_state_dict(tiny_model)) | {"gridattn_config"}
    corrected = HMANet(hmanet_config(2, "tiny"))
    path = saved["safetensors"].with_name("corrected.safetensors")
    save_hmanet(corrected, path)
    assert load_hmanet(path).config.numerics == "corrected"


def _damage(data: bytes, seed: int, how: str) -> bytes:
    rng = random.Random(seed)
    if how == "truncate":
        return data[: rng.randrange(0, len(data))]
    if how == "header":  # the first bytes hold the lengths and the header (zip directory / JSON)
        position = rng.randrange(0, min(64, len(data)))
    else:
        position = rng.randrange(0, len(data))
    return data[:position] + bytes([data[position] ^ (1 << rng.randrange(8))]) + data[position + 1:]


@settings(max_examples=at_least(12), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), how=st.sampled_from(["truncate", "header", "flip"]),
       suffix=st.sampled_from(["pth", "safetensors"]))
def test_damaged_files_are_refused_or_load_a_finite_model(saved, tmp_path, seed, how, suffix):
    """A damaged file either raises CheckpointError (never another exception) or, when the flipped bit hit
    something unused (a zip entry's local header) or tensor data (undetectable without checksums), loads a
    model of the same configuration. A truncated file never loads."""
    path = tmp_path / f"damaged-{seed}-{how}.{suffix}"
    path.write_bytes(_damage(saved[suffix].read_bytes(), seed, how))
    try:
        model = load_hmanet(path)
    except CheckpointError as error:
        assert str(path) in str(error) or "checkpoint" in str(error)
        return
    assert how != "truncate" and model.config == load_hmanet(saved[suffix]).config


def test_truncated_and_empty_files_name_the_file(saved, tmp_path):
    for suffix in ("pth", "safetensors"):
        for size in (0, 7, 100):
            path = tmp_path / f"short{size}.{suffix}"
            path.write_bytes(saved[suffix].read_bytes()[:size])
            with pytest.raises(CheckpointError, match="cannot read checkpoint .*short"):
                load_hmanet(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch gridattn-pwned",))


@pytest.mark.parametrize("wrap", ["bare", "params_ema", "nested"])
def test_pickles_that_would_run_code_are_refused_without_running_it(tmp_path, monkeypatch, wrap):
    monkeypatch.chdir(tmp_path)
    payload = {"bare": _RunsCode(), "params_ema": {"params_ema": _RunsCode()},
               "nested": {"params_ema": {"conv_first.weight": [_RunsCode()]}}}[wrap]
    for name, dump in (("plain.pth", lambda f: pickle.dump(payload, f)), ("zip.pth", lambda f: torch.save(payload, f))):
        with open(tmp_path / name, "wb") as handle:
            dump(handle)
        with pytest.raises(CheckpointError, match="cannot read checkpoint"):
            load_hmanet(tmp_path / name)
    assert not (tmp_path / "gridattn-pwned").exists()


def test_hostile_contents_give_clear_errors(tiny_model, tmp_path):
    state = to_official_state_dict(tiny_model)
    with pytest.raises(CheckpointError, match="not tensors: conv_first.weight"):
        load_hmanet({**state, "conv_first.weight": "weights"})
    poisoned = dict(state)
    poisoned["conv_last.bias"] = torch.tensor([0.0, float("nan"), 0.0])
    with pytest.raises(CheckpointError, match="NaN or infinite weights in: conv_last.bias"):
        load_hmanet(poisoned)
    with pytest.raises(CheckpointError, match="unknown fields \\['future'\\]"):
        load_hmanet({"params_ema": state, "gridattn_config": {"scale": 3, "future": 1}})
    with pytest.raises(CheckpointError, match="not a valid HMANet configuration"):
        load_hmanet({"params_ema": state, "gridattn_config": {"scale": 5}})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_hmanet({"params_ema": state, "gridattn_config": "x3"})
    with pytest.raises(CheckpointError, match="must be a mapping"):
        load_hmanet({"params_ema": state, "gridattn_config": [3]})
    with pytest.raises(CheckpointError, match="must be a dict of tensors"):
        load_hmanet([1, 2])
    with pytest.raises(TypeError, match="saves a gridattn HMANet"):
        save_hmanet(torch.nn.Linear(2, 2), tmp_path / "linear.safetensors")


def test_safetensors_with_broken_metadata(tiny_model, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in to_official_state_dict(tiny_model).items()}
    path = tmp_path / "bad-json.safetensors"
    save_file(state, path, metadata={"gridattn_config": "{not json"})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_hmanet(path)
