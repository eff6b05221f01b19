"""gridattn's HMANet in spandrel (gridattn.integrations.spandrel), tested through the real spandrel package; and
spandrel's own DAT reading gridattn's DAT files.

spandrel imports torchvision, which must match the installed torch; the default test environment has neither,
so this module is skipped there. ``.ci/torchvision`` builds the environment (.venv-torchvision) and runs it.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import pytest
import torch

try:
    spandrel = pytest.importorskip(
        "spandrel",
        reason="spandrel is not installed: run .ci/torchvision (its own venv, torch with a matching torchvision)",
    )
# installed, but its torchvision does not fit this torch ("operator torchvision::nms does not exist")
except Exception as error:  # noqa: BLE001
    pytest.skip(f"spandrel does not import here ({type(error).__name__}: {error}); run .ci/torchvision",
                allow_module_level=True)

import official_cases_dat
from hypothesis import given
from hypothesis import strategies as st
from official_cases import CASES, FIXTURE, config_of, input_of, official_state

from gridattn.integrations.spandrel import ARCH_ID, ARCHITECTURE, HMANetArch, detect, load_descriptor, register
from gridattn.models import CheckpointError, HMANet, HMANetConfig, hmanet_config, save_hmanet, to_official_state_dict

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def tiny_config(scale: int = 2, **changes) -> HMANetConfig:
    """An official-numerics HMANet small enough to build and run in milliseconds."""
    fields = {"scale": scale, "embed_dim": 16, "depths": (1,), "num_heads": (2,), "window_size": 4,
              "upsample_features": 8, "numerics": "official"}
    fields.update(changes)
    return HMANetConfig(**fields)


def random_model(config: HMANetConfig, seed: int = 0) -> HMANet:
    """``config``'s model with every parameter moved off its initialisation (no zero bias, no unit gain)."""
    model = HMANet(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def image(channels: int = 3, height: int = 9, width: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


def same_config(a: HMANetConfig, b: HMANetConfig) -> bool:
    """Equal in everything but stochastic depth (not in the weights, irrelevant in eval mode)."""
    return dataclasses.replace(a, drop_path_rate=0.0) == dataclasses.replace(b, drop_path_rate=0.0)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """HMANet in spandrel's real MAIN_REGISTRY, registered twice (the second call must change nothing)."""
    first = register()
    second = register()
    assert first is second
    return first


WRAPPERS = {
    "bare": lambda state: state,
    "params_ema": lambda state: {"params_ema": state},
    "params": lambda state: {"params": state},
}


def assert_loads_as(descriptor, model: HMANet, x: torch.Tensor) -> None:
    """``descriptor`` wraps a gridattn HMANet with ``model``'s configuration and computes exactly what it does."""
    config = model.config
    assert isinstance(descriptor, spandrel.ImageModelDescriptor)
    assert descriptor.architecture is ARCHITECTURE and descriptor.architecture.id == ARCH_ID
    assert descriptor.purpose == "SR"
    assert descriptor.scale == config.scale
    assert descriptor.input_channels == descriptor.output_channels == config.in_channels
    assert descriptor.size_requirements.none  # any size: the model pads internally
    assert descriptor.supports_bfloat16 and not descriptor.supports_half
    assert isinstance(descriptor.model, HMANet)
    assert same_config(descriptor.model.config, config)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(descriptor.model(x), expected)
    called = descriptor(x)  # spandrel's call API: inference mode, clamped to [0, 1]
    assert called.shape == (1, config.in_channels, config.scale * x.shape[2], config.scale * x.shape[3])
    assert torch.equal(called, expected.clamp(0, 1))


# --- registration -------------------------------------------------------------------------------------------

def test_register_adds_one_entry_once_and_first_in_detection_order():
    registry = spandrel.MAIN_REGISTRY.copy()  # a private copy: the real one already has HMANet (fixture)
    assert sum(support.architecture.id == ARCH_ID for support in spandrel.MAIN_REGISTRY) == 1
    fresh = spandrel.ArchRegistry()
    fresh.add(*[s for s in spandrel.MAIN_REGISTRY if s.architecture.id != ARCH_ID])
    count = len(fresh)
    entry = register(fresh)
    assert register(fresh) is entry and len(fresh) == count + 1
    order = [support.architecture.id for support in fresh.architectures("detection")]
    assert order[0] == ARCH_ID and order.count(ARCH_ID) == 1
    # insertion order of the others is kept
    assert order[1:] == [s.architecture.id for s in fresh.architectures("insertion") if s.architecture.id != ARCH_ID]
    assert len(registry) == len(spandrel.MAIN_REGISTRY)


def test_register_keeps_a_foreign_architecture_with_the_same_id():
    class Other(spandrel.Architecture):
        def __init__(self):
            super().__init__(id=ARCH_ID, detect=lambda state: False)

        def load(self, state_dict):  # pragma: no cover - never detected
            raise AssertionError

    registry = spandrel.ArchRegistry()
    foreign = spandrel.ArchSupport.from_architecture(Other())
    registry.add(foreign)
    with pytest.warns(RuntimeWarning, match="already has an architecture"):
        assert register(registry) is foreign
    assert len(registry) == 1


def test_register_respects_architectures_that_come_before_it():
    class Early(spandrel.Architecture):
        def __init__(self):
            super().__init__(id="Early", detect=lambda state: False)

        def load(self, state_dict):  # pragma: no cover - never detected
            raise AssertionError

    registry = spandrel.ArchRegistry()
    registry.add(*[s for s in spandrel.MAIN_REGISTRY if s.architecture.id == "HAT"])
    registry.add(spandrel.ArchSupport.from_architecture(Early(), before=(ARCH_ID,)))
    register(registry)
    assert [s.architecture.id for s in registry.architectures("detection")] == ["Early", ARCH_ID, "HAT"]


def test_no_builtin_detector_claims_hmanet():
    """Detection order is a safeguard only: none of spandrel's own detectors takes an HMANet state dict."""
    state = to_official_state_dict(random_model(tiny_config()))
    claimed = [s.architecture.id for s in spandrel.MAIN_REGISTRY if s.architecture.id != ARCH_ID and s.detect(state)]
    assert claimed == []


# --- official checkpoints -----------------------------------------------------------------------------------

@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_layout_files_load_through_model_loader(scale, wrapper, tmp_path):
    model = random_model(tiny_config(scale), seed=scale)
    path = tmp_path / f"hmanet_x{scale}.pth"
    torch.save(WRAPPERS[wrapper](to_official_state_dict(model)), path)
    assert_loads_as(spandrel.ModelLoader().load_from_file(path), model, image())


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_layout_state_dicts_load_through_model_loader(scale, wrapper):
    model = random_model(tiny_config(scale, in_channels=1 if scale == 3 else 3), seed=10 + scale)
    state = WRAPPERS[wrapper](to_official_state_dict(model))
    assert_loads_as(spandrel.ModelLoader().load_from_state_dict(state), model, image(model.config.in_channels))


def test_safetensors_file(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = random_model(tiny_config(4, qkv_bias=False, window_size=8, embed_dim=24, num_heads=(4,)), seed=3)
    path = tmp_path / "hmanet_x4.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in to_official_state_dict(model).items()}, str(path))
    assert_loads_as(spandrel.ModelLoader().load_from_file(path), model, image(height=5, width=13))


@pytest.mark.parametrize("name", [name for name in sorted(CASES) if "reduced" in name])
def test_official_code_outputs_through_spandrel(name):
    """Seeded weights that the official implementation ran (tests/fixtures): spandrel's descriptor gives the
    official code's outputs."""
    expected = torch.load(os.path.join(FIXTURES, FIXTURE), weights_only=True)[name]
    descriptor = spandrel.ModelLoader().load_from_state_dict({"params_ema": official_state(name)})
    assert same_config(descriptor.model.config, config_of(name))
    with torch.no_grad():
        torch.testing.assert_close(descriptor.model(input_of(name)), expected, rtol=0, atol=1e-5)


@given(
    scale=st.sampled_from([2, 3, 4]),
    embed_dim=st.sampled_from([8, 16, 24]),
    depths=st.lists(st.integers(1, 2), min_size=1, max_size=2),
    heads=st.sampled_from([2, 4]),
    window_size=st.sampled_from([4, 8]),
    in_channels=st.sampled_from([1, 3]),
    mlp_ratio=st.sampled_from([1.0, 2.0]),
    qkv_bias=st.booleans(),
    upsample_features=st.sampled_from([4, 8]),
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
)
def test_hyperparameters_are_read_off_the_shapes(scale, embed_dim, depths, heads, window_size, in_channels, mlp_ratio,
                                                 qkv_bias, upsample_features, size):
    if (embed_dim // 4) % (heads // 2):
        heads = 2
    config = tiny_config(scale, embed_dim=embed_dim, depths=tuple(depths), num_heads=(heads,) * len(depths),
                         window_size=window_size, in_channels=in_channels, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                         upsample_features=upsample_features)
    model = random_model(config, seed=scale * embed_dim)
    state = to_official_state_dict(model)
    assert detect(state)
    assert_loads_as(spandrel.ModelLoader().load_from_state_dict(state), model, image(in_channels, *size))


# --- gridattn's own files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_hmanet_file_of_an_official_numerics_model(suffix, tmp_path):
    pytest.importorskip("safetensors")
    model = random_model(tiny_config(3), seed=5)
    path = tmp_path / f"model{suffix}"
    save_hmanet(model, path)
    assert_loads_as(spandrel.ModelLoader().load_from_file(path), model, image())
    assert_loads_as(load_descriptor(path), model, image())


def test_save_hmanet_files_and_their_configuration(tmp_path):
    """.safetensors files carry the configuration as a tensor, which spandrel passes on: they load with it.
    .pth files keep it beside params_ema, which spandrel drops: the model is configured as an official one
    (documented). load_descriptor keeps the stored configuration of both."""
    model = random_model(hmanet_config(2, "tiny").replace(embed_dim=16, num_heads=(2, 2), window_size=4), seed=6)
    assert model.config.numerics == "corrected" and model.config.image_skip
    for suffix in (".pth", ".safetensors"):
        path = tmp_path / f"model{suffix}"
        save_hmanet(model, path)
        assert_loads_as(load_descriptor(path), model, image())
        via_spandrel = spandrel.ModelLoader().load_from_file(path)
        if suffix == ".safetensors":
            assert_loads_as(via_spandrel, model, image())
        else:
            assert via_spandrel.model.config.numerics == "official" and not via_spandrel.model.config.image_skip


def test_bare_state_dict_with_gridattn_config_keeps_it():
    model = random_model(hmanet_config(4, "tiny").replace(embed_dim=16, num_heads=(2, 2), window_size=4), seed=7)
    config = dataclasses.asdict(model.config)
    state = {**to_official_state_dict(model), "gridattn_config": config}
    assert_loads_as(spandrel.ModelLoader().load_from_state_dict(state), model, image())
    assert_loads_as(load_descriptor(state), model, image())


# --- what it must not claim, and errors ---------------------------------------------------------------------

def _other_models():
    from spandrel.architectures.ATD import ATD
    from spandrel.architectures.DRCT import DRCT
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.SwinIR import SwinIR

    small = {"embed_dim": 12, "depths": (1,), "num_heads": (2,), "window_size": 4, "upscale": 2}
    return {
        "HAT": HAT(**small, num_feat=8, squeeze_factor=3),
        "SwinIR": SwinIR(**small, upsampler="pixelshuffle"),
        "DRCT": DRCT(**small, upsampler="pixelshuffle", gc=8),
        # ATD's detector needs a second layer in the first group
        "ATD": ATD(**{**small, "depths": (2,)}, upsampler="pixelshuffle", category_size=16, num_tokens=8),
    }


def test_related_architectures_are_not_claimed():
    """HAT, SwinIR, DRCT and ATD share HMANet's key naming (conv_first, layers.N.residual_group, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.meshgrid's indexing warning inside spandrel's models
        models = _other_models()
    for arch_id, model in models.items():
        state = model.state_dict()
        assert not detect(state), arch_id
        assert spandrel.ModelLoader().load_from_state_dict(state).architecture.id == arch_id


def test_broken_hmanet_state_dicts_give_clear_errors():
    state = to_official_state_dict(random_model(tiny_config(2)))
    missing = {k: v for k, v in state.items() if k != "layers.0.residual_group.blocks.1.mlp.fc2.weight"}
    with pytest.raises(CheckpointError, match=r"missing \(1\): layers\.0\.residual_group\.blocks\.1\.mlp\.fc2\.weight"):
        spandrel.ModelLoader().load_from_state_dict(missing)
    misshaped = {**state, "conv_after_body.weight": torch.zeros(16, 16, 1, 1)}
    with pytest.raises(CheckpointError, match=r"mis-shaped \(1\): conv_after_body\.weight"):
        spandrel.ModelLoader().load_from_state_dict(misshaped)
    extra = {**state, "layers.0.residual_group.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): layers\.0\.residual_group\.extra\.weight"):
        spandrel.ModelLoader().load_from_state_dict(extra)
    upsampler = {**state, "upsample.0.weight": torch.zeros(8 * 5, 8, 3, 3)}
    with pytest.raises(CheckpointError, match="unsupported upsampler"):
        spandrel.ModelLoader().load_from_state_dict(upsampler)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        spandrel.ModelLoader().load_from_state_dict({**state, "gridattn_config": "{"})
    with pytest.raises(CheckpointError, match="unknown fields \\['colour'\\]"):
        spandrel.ModelLoader().load_from_state_dict({**state, "gridattn_config": {"colour": 1}})
    # without a GAB's grid attention it is no HMANet, and nothing else claims it either
    no_grid = {k: v for k, v in state.items() if ".grid_attn." not in k}
    assert not detect(no_grid)
    with pytest.raises(spandrel.UnsupportedModelError):
        spandrel.ModelLoader().load_from_state_dict(no_grid)


# --- precision and sizes ------------------------------------------------------------------------------------

def test_bfloat16_runs_and_half_is_refused():
    model = random_model(tiny_config(2), seed=8)
    descriptor = spandrel.ModelLoader().load_from_state_dict(to_official_state_dict(model))
    x = image()
    with pytest.raises(spandrel.UnsupportedDtypeError):
        descriptor.half()
    descriptor.bfloat16()
    assert descriptor.dtype == torch.bfloat16
    y = descriptor(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    with torch.no_grad():
        torch.testing.assert_close(y.float(), model(x).clamp(0, 1), rtol=0, atol=0.05)


@pytest.mark.parametrize("size", [(1, 1), (2, 7), (16, 5)])
def test_any_size_without_padding_by_spandrel(size):
    model = random_model(tiny_config(4, window_size=8), seed=9)
    descriptor = spandrel.ModelLoader().load_from_state_dict(to_official_state_dict(model))
    assert_loads_as(descriptor, model, image(3, *size))


def test_architecture_instances_are_independent_of_the_registry():
    """HMANetArch works on its own (a custom registry, or called directly)."""
    model = random_model(tiny_config(2), seed=11)
    assert_loads_as(ARCHITECTURE.load(to_official_state_dict(model)), model, image())
    assert isinstance(ARCHITECTURE, HMANetArch)


def test_a_model_the_trainer_wrote_loads_through_spandrel(tmp_path):
    """Train a few steps, then hand the printed model file to spandrel's own loader (which keeps only tensors):
    the configuration travels in the file, and the outputs are gridattn's load of the same file."""
    import contextlib
    import io
    import re

    import numpy as np

    from gridattn.data import imresize, write_image
    from gridattn.models import load_hmanet
    from gridattn.train import TrainConfig, train

    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / "hr" / f"{i}.png",
                    imresize(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8), size=(64, 64)))
    config = tiny_config(2, numerics="corrected", image_skip=True, window_size=8, interval=2)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train(TrainConfig(output_dir=str(tmp_path / "stage"), model=config, data=(str(tmp_path / "hr"),),
                          iterations=3, batch_size=2, patch_size=16, lr=2e-3, checkpoint_every=3, progress=False))
    path = re.search(r"model \(EMA weights\) (\S+),", printed.getvalue()).group(1)
    register()
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == ARCH_ID and same_config(descriptor.model.config, config)
    x = image(height=13, width=10)
    with torch.no_grad():
        assert torch.equal(descriptor.model(x), load_hmanet(path)(x))
        assert torch.equal(load_descriptor(tmp_path / "stage").model(x), load_hmanet(path)(x))


# ---------------------------------------------------------------------------------------------------------
# spandrel's own DAT (gridattn registers only HMANet) as a third-party reader of gridattn's DAT layout


# spandrel reads img_size (the masks' size) only off layers.0.blocks.2's mask, 64 without it: files whose first
# group has fewer than three blocks but masks elsewhere (the grayscale case: depths 2, 2, 2) fail its strict load
_SPANDREL_DAT_CASES = sorted(name for name in official_cases_dat.CASES
                             if official_cases_dat.config_of(name).depths[0] >= 3)


@pytest.mark.filterwarnings("ignore:torch.meshgrid")
@pytest.mark.parametrize("name", _SPANDREL_DAT_CASES)
def test_spandrels_dat_reads_gridattns_dat_layout(name):
    """The official-layout state dicts of the DAT cases (written by gridattn's layout) load through spandrel's
    ``ModelLoader`` as its own DAT, with the scale and channels of the case, and give the official code's outputs
    (the fixture) and gridattn's to float32 rounding."""
    from gridattn.models import load_model

    state = official_cases_dat.official_state(name)
    config = official_cases_dat.config_of(name)
    descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    assert descriptor.architecture.id == "DAT" and descriptor.scale == config.scale
    assert descriptor.input_channels == config.in_channels
    x = official_cases_dat.input_of(name)
    expected = torch.load(os.path.join(FIXTURES, official_cases_dat.FIXTURE), weights_only=True)["outputs"][name]
    with torch.no_grad():
        theirs = descriptor.model.eval()(x)
        ours = load_model({"params": state})(x)
    tolerance = 5e-6 * expected.abs().max().item()
    assert (theirs - expected).abs().max().item() <= tolerance
    assert (theirs - ours).abs().max().item() <= tolerance
