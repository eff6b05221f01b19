"""The model interface: the registry, one configuration encoding, layouts read two ways (neosr's HMA), detection,
and the consumers' handling of every architecture (command line, ONNX, attention options)."""

import re
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from neosr_cases import CASES as NEOSR_CASES
from neosr_cases import FIXTURE as NEOSR_FIXTURE
from neosr_cases import config_of as neosr_config
from neosr_cases import input_of as neosr_input
from neosr_cases import neosr_state

from gridattn.cli import main
from gridattn.layers import set_attention_options
from gridattn.models import (
    CheckpointError,
    HMANet,
    LayoutAssumedWarning,
    architectures,
    build_model,
    config_from_dict,
    get_architecture,
    hmanet_config,
    load_model,
    save_model,
)
from gridattn.models.files import detect_architecture
from gridattn.models.hmanet_layout import OFFICIAL as HMA_OFFICIAL
from gridattn.models.layout import to_layout

FIXTURES = Path(__file__).parent / "fixtures"
PRESETS = [(arch.name, preset) for arch in architectures().values() for preset in arch.presets]


_SCALE_ONE = {"denoise_gray", "denoise_color", "jpeg_gray", "jpeg_color"}


@pytest.mark.parametrize("arch_name, preset", PRESETS)
def test_every_preset_encodes_and_decodes_to_itself(arch_name, preset):
    arch = get_architecture(arch_name)
    config = arch.preset(preset, 1 if preset in _SCALE_ONE else 2)
    encoded = config.to_dict()
    assert encoded["arch"] == arch_name and encoded["version"] == arch.config_class.version
    assert config_from_dict(encoded) == config
    assert type(config_from_dict(encoded)) is arch.config_class


def test_encodings_are_checked():
    config = hmanet_config(2, "tiny")
    assert config_from_dict({k: v for k, v in config.to_dict().items() if k != "arch"}) == config  # gridattn 0.2
    with pytest.raises(ValueError, match="unknown architecture 'vdsr'"):
        config_from_dict({**config.to_dict(), "arch": "vdsr"})
    with pytest.raises(ValueError, match="version 99 is not one this gridattn reads"):
        config_from_dict({**config.to_dict(), "version": 99})
    swinir = get_architecture("swinir").preset("tiny", 2)
    with pytest.raises(ValueError, match="architecture 'swinir', not 'hmanet'"):
        type(config).from_dict(swinir.to_dict())
    with pytest.raises(ValueError, match="unknown SwinIR preset 'huge'"):
        get_architecture("swinir").preset("huge", 2)
    with pytest.raises(ValueError, match="HAT has no layout 'neosr'"):
        get_architecture("hat").layout("neosr")


# the residual connections each official code builds (HAT's and HMA's '3conv' and DAT's 'identity' build nothing
# and fail)
_RESIDUAL_CONNECTIONS = {"hmanet": {"1conv", "identity"}, "swinir": {"1conv", "3conv"}, "hat": {"1conv", "identity"},
                         "dat": {"1conv", "3conv"}}


@pytest.mark.filterwarnings("ignore::gridattn.models.LayoutAssumedWarning")
@pytest.mark.parametrize("arch_name", sorted(_RESIDUAL_CONNECTIONS))
@pytest.mark.parametrize("kind", ["1conv", "3conv", "identity"])
def test_each_architecture_takes_the_residual_connections_of_its_official_code(arch_name, kind):
    arch = get_architecture(arch_name)
    if kind not in _RESIDUAL_CONNECTIONS[arch_name]:
        with pytest.raises(ValueError, match=f"{arch_name}: resi_connection must be one of .*got '{kind}'"):
            arch.preset("tiny", 2, resi_connection=kind)
        return
    model = build_model(arch.preset("tiny", 2, resi_connection=kind))
    closing = [type(m).__name__ for name, m in model.named_modules()
               if re.fullmatch(r"layers\.\d+\.conv|conv_after_body", name)]
    assert closing and set(closing) == {"Identity" if kind == "identity" else "Conv2d" if kind == "1conv"
                                        else "Sequential"}
    # the file says which: read back (in the official layout, from its keys alone) as the same kind
    state = to_layout(model, arch.layout("official"))
    assert load_model({"params": state}, arch=arch_name).config.resi_connection == kind


@pytest.mark.parametrize("name", list(NEOSR_CASES))
def test_neosr_files_load_with_the_neosr_layout_and_not_as_official(name):
    """neosr's own outputs (fixture made from its code) are reproduced with layout='neosr'; read as official files
    (the DIV2K mean) they are off by a visible amount: the negative control."""
    expected = torch.load(FIXTURES / NEOSR_FIXTURE, weights_only=True)["outputs"][name]
    state = {"params": neosr_state(name)}
    model = load_model(state, layout="neosr")
    assert model.config == neosr_config(name).replace(drop_path_rate=0.1)  # not in the weights: the default
    with torch.no_grad():
        ours = model(neosr_input(name))
        official = load_model(state, layout="official")(neosr_input(name))
    assert (ours - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    assert (official - expected).abs().max() > 1e-2


def test_neosr_parameter_counts_equal_gridattn_presets():
    counts = torch.load(FIXTURES / NEOSR_FIXTURE, weights_only=True)["parameters"]
    shapes = {"hma": dict(embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, window_size=8),
              "hma_medium": dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=16),
              "hma_large": dict(embed_dim=180, depths=(6,) * 12, num_heads=(6,) * 12, window_size=24)}
    for (preset, scale), count in counts.items():
        with torch.device("meta"):
            config = hmanet_config(scale).replace(**shapes[preset])
            width = config.embed_dim // 2 // 16  # the official grid-bias width, which neosr keeps (1 for hma)
            model = HMANet(config.replace(grid_bias_dim=None if width >= 4 else width))
        assert sum(p.numel() for p in model.parameters()) == count, (preset, scale)


def _assumed(state, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(state, **kwargs)
    notes = [str(w.message) for w in caught if issubclass(w.category, LayoutAssumedWarning)]
    return model, notes


def test_a_file_that_could_be_read_two_ways_is_never_guessed_silently():
    # shapes of neosr's `hma` and of no official release: neosr's layout, said
    with torch.device("meta"):
        hma = HMANet(hmanet_config(2).replace(embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, window_size=8))
    state = {k: torch.zeros(v.shape) for k, v in to_layout(hma, HMA_OFFICIAL).items()}
    state["relative_position_index_SA"] = to_layout(HMANet(hmanet_config(2, "tiny")), HMA_OFFICIAL)[
        "relative_position_index_SA"]
    model, notes = _assumed(state)
    assert model.config.rgb_mean == (0.5, 0.5, 0.5)
    assert len(notes) == 1 and "neosr's hma and no official release" in notes[0] and "layout='official'" in notes[0]
    # other shapes: official assumed, said, with the way to the other
    small = to_layout(HMANet(hmanet_config(2, "tiny")), HMA_OFFICIAL)
    model, notes = _assumed(small)
    assert model.config.rgb_mean == hmanet_config(2).rgb_mean
    assert len(notes) == 1 and "layout='neosr'" in notes[0]
    # a layout given, or a file that carries its configuration: nothing to say
    assert _assumed(small, layout="neosr")[1] == [] and _assumed(small, layout="neosr")[0].config.rgb_mean == (0.5,) * 3


def test_a_gridattn_file_carries_its_layout(tmp_path):
    for mean in ((0.5, 0.5, 0.5), hmanet_config(2).rgb_mean):
        model = HMANet(hmanet_config(2, "tiny").replace(rgb_mean=mean))
        save_model(model, tmp_path / "m.safetensors")
        loaded, notes = _assumed(str(tmp_path / "m.safetensors"))
        assert notes == [] and loaded.config == model.config
    with pytest.raises(CheckpointError, match="disagrees with the neosr layout in rgb_mean"):
        load_model(tmp_path / "m.safetensors", layout="neosr")


def test_detection_names_the_architecture_and_refuses_unknown_keys():
    for arch in architectures().values():
        preset = "tiny"
        model = build_model(arch.preset(preset, 2))
        assert detect_architecture(to_layout(model, arch.layout(None))).name == arch.name
    with pytest.raises(CheckpointError, match="not a checkpoint of a registered architecture"):
        load_model({"conv.weight": torch.zeros(1)})


def test_the_command_line_says_which_layout_it_assumed(tmp_path, capsys):
    from gridattn.data import write_image

    path = tmp_path / "hma.pth"
    torch.save({"params": to_layout(HMANet(hmanet_config(2, "tiny")), HMA_OFFICIAL)}, path)
    write_image(tmp_path / "in.png", (torch.rand(12, 10, 3) * 255).to(torch.uint8).numpy())
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--checkpoint", str(path),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"gridattn: note: {path}: HMANet checkpoint without gridattn's configuration" in err
    assert "--layout neosr" in err
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--checkpoint", str(path),
                 "--quiet", "--layout", "neosr"]) == 0
    assert capsys.readouterr().err == ""


def test_export_onnx_dynamic_with_a_size_too_small_is_an_input_error(tmp_path, capsys):
    """It exited 1 with "internal error ... report it" (a plain ValueError); a user's mistake exits 2."""
    pytest.importorskip("onnxscript")
    save_model(HMANet(hmanet_config(2, "tiny")), tmp_path / "m.safetensors")
    assert main(["export-onnx", "--checkpoint", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "m.onnx"),
                 "--dynamic", "--size", "8", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gridattn: error: a dynamic export needs example_size above the padding multiple 8")
    assert "internal error" not in err


@given(backend=st.sampled_from(["math", "sdpa"]), max_scores=st.integers(1, 10**6),
       arch_name=st.sampled_from(list(architectures())))
def test_attention_options_reach_every_attention_layer(backend, max_scores, arch_name):
    from gridattn.layers.options import ATTENTION_LAYERS

    model = build_model(get_architecture(arch_name).preset("tiny", 2))
    layers = [m for m in model.modules() if isinstance(m, ATTENTION_LAYERS)]
    assert set_attention_options(model, backend=backend, max_scores=max_scores) == len(layers) > 0
    assert all(m.backend == backend and m.max_scores == max_scores for m in layers)
    with pytest.raises(ValueError):
        set_attention_options(model, max_scores=0)
