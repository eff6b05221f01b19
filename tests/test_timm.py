"""gridattn's layers inside timm's own Swin and MaxViT / MaxxViT models (gridattn.integrations.timm), against timm.

timm imports torchvision, which must match the installed torch; the default test environment has neither, so
this module is skipped there. ``.ci/torchvision`` builds the environment (.venv-torchvision) and runs it.

The models are timm's registered variants (their layouts: ``tf`` and ``rw`` qkv orders, ``tf`` and ``rw``
tables, ``rmlp`` MLPs, MaxxViT's ConvNeXt and parallel blocks, Swin's shifted windows), made smaller through
timm's own keyword overrides so that the suite stays fast, with every weight perturbed so that no layer scale,
zero-initialised head or symmetric table hides a layout error.
"""

from __future__ import annotations

import copy

import pytest
import torch

try:
    timm = pytest.importorskip(
        "timm", reason="timm is not installed: run .ci/torchvision (its own venv, torch with a matching torchvision)"
    )
# installed, but its torchvision does not fit this torch ("operator torchvision::nms does not exist")
except Exception as error:  # noqa: BLE001
    pytest.skip(f"timm does not import here ({type(error).__name__}: {error}); run .ci/torchvision",
                allow_module_level=True)

import timm_reference
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds

from gridattn import GridAttention, WindowAttention
from gridattn.integrations import timm as integration
from gridattn.integrations.timm import ConversionError, ParallelAttention, TransformerBlock, convert, to_timm_state_dict

# name -> (overrides that shrink the model, input size timm is built for)
MODELS = {
    "swin_tiny_patch4_window7_224": (dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)), (224, 224)),
    "swin_s3_tiny_224": (dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)), (224, 224)),
    "swinv2_tiny_window8_256": (dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)), (256, 256)),
    # trained at window 12, fine-tuned at 16: the position MLP normalises offsets by the pre-training window
    "swinv2_base_window12to16_192to256": (dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
                                          (256, 256)),
    "maxvit_tiny_tf_224": (dict(embed_dim=(32, 64, 96, 128), depths=(1, 2, 1, 1), stem_width=32), (224, 224)),
    "maxvit_nano_rw_256": (dict(embed_dim=(32, 64, 96, 128), depths=(1, 2, 1, 1), stem_width=(16, 32)), (256, 256)),
    "maxvit_rmlp_pico_rw_256": (dict(depths=(1, 2, 1, 1)), (256, 256)),
    "maxxvit_rmlp_nano_rw_256": (dict(embed_dim=(64, 128, 128, 256), depths=(1, 1, 1, 1)), (256, 256)),
    "maxxvitv2_nano_rw_256": (dict(embed_dim=(96, 96, 192, 192), depths=(1, 1, 1, 1)), (256, 256)),
    "maxvit_tiny_pm_256": (dict(embed_dim=(32, 64, 96, 128), depths=(1, 2, 1, 1), stem_width=(16, 32)), (256, 256)),
}
# sizes timm's MaxViT refuses (stages not multiples of the partition) and where timm's Swin pads unmasked
ODD_SIZES = {"swin": [(100, 68), (64, 92)], "maxvit": [(160, 96), (96, 288)]}


def make(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.nn.Module:
    overrides, _ = MODELS[name]
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **overrides).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # perturb: layer scales of 1e-6, zero heads and symmetric tables hide errors
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.05)
    return model.to(dtype)


def image(size: tuple[int, int], dtype: torch.dtype, seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", MODELS)
def test_converted_model_equals_timm_at_its_size(name, dtype):
    model = make(name, dtype)
    x = image(MODELS[name][1], dtype)
    with torch.no_grad():
        expected, logits = model.forward_features(x), model(x)
        convert(model)
        assert relative_error(model.forward_features(x), expected) <= TOLERANCE[dtype]
        assert relative_error(model(x), logits) <= TOLERANCE[dtype]
    converted = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    layers = [m for m in model.modules() if isinstance(m, (WindowAttention, GridAttention))]
    assert converted and len(layers) >= len(converted)
    if name.startswith("max"):  # a grid in every MaxViT stage, with the model's partition as its group
        assert any(isinstance(m, GridAttention) and m.grid_size is not None for m in layers)


@pytest.mark.parametrize("name", MODELS)
def test_weights_go_back_to_timm_unchanged(name):
    model = make(name)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    back = to_timm_state_dict(convert(model))
    assert back.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(back[key], value), key
    fresh = timm.create_model(name, pretrained=False, **MODELS[name][0]).double()
    fresh.load_state_dict(back)  # strict


@pytest.mark.parametrize("name", MODELS)
def test_at_odd_sizes_converted_equals_timm_with_padding_masked(name):
    """Where timm cannot partition, the converted model is timm's own attention with its padding masked."""
    model = make(name)
    reference = timm_reference.masked(copy.deepcopy(model))
    convert(model)
    if name.startswith("swin"):
        reference.patch_embed.strict_img_size = False
        reference.patch_embed.dynamic_img_pad = True
    for size in ODD_SIZES["swin" if name.startswith("swin") else "maxvit"]:
        x = image(size, torch.float64, batch=1)
        with torch.no_grad():
            assert relative_error(model.forward_features(x), reference.forward_features(x)) <= 1e-10, size


def _block_pairs():
    """(family, a timm block, its conversion) for one block of each kind."""
    pairs = []
    for name, kinds in [("swin_tiny_patch4_window7_224", [0, 1]), ("swinv2_base_window12to16_192to256", [0, 1]),
                        ("maxvit_tiny_tf_224", ["grid", "block"]),
                        ("maxvit_rmlp_pico_rw_256", ["grid"]), ("maxvit_tiny_pm_256", ["parallel"])]:
        model = make(name, seed=3)
        blocks = [m for m in model.modules() if type(m).__name__ in
                  ("SwinTransformerBlock", "SwinTransformerV2Block", "PartitionAttentionCl",
                   "ParallelPartitionAttention")]
        for kind in kinds:
            if isinstance(kind, int):  # Swin: unshifted, shifted
                block = blocks[kind]
            elif kind == "parallel":
                block = blocks[0]
            else:
                block = next(b for b in blocks if getattr(b, "partition_block", None) == (kind == "block"))
            pairs.append((name, kind, block))
    return pairs


BLOCKS = _block_pairs()


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{n}-{k}" for n, k, _ in BLOCKS])
@settings(deadline=None)
@given(height=st.integers(1, 20), width=st.integers(1, 20), seed=seeds)
def test_any_size_block_equals_timm_block_with_padding_masked(index, height, width, seed):
    _, _, block = BLOCKS[index]
    reference = timm_reference.masked(copy.deepcopy(block))
    converted = integration._converted_block(copy.deepcopy(block), "block")
    channels = block.norm1.normalized_shape[0]
    x = torch.randn(2, height, width, channels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), reference(x), rtol=1e-10, atol=1e-10)


def test_layout_errors_are_caught(monkeypatch):
    """Negative controls: a converter that skipped the rw qkv reorder or the tf table flip fails the comparison."""
    for name, broken in [("maxvit_nano_rw_256", "_qkv_from_timm"), ("maxvit_tiny_tf_224", "_table_from_tf")]:
        model = make(name)
        x = image(MODELS[name][1], torch.float64, batch=1)
        with torch.no_grad():
            expected = model.forward_features(x)
            with monkeypatch.context() as patch:
                if broken == "_qkv_from_timm":
                    patch.setattr(integration, broken, lambda weight, heads, layout: weight)
                else:
                    patch.setattr(integration, broken, lambda table: table.reshape(table.shape[0], -1).T.contiguous())
                convert(model)
            assert relative_error(model.forward_features(x), expected) > 1e-3, name


def test_swin_shift_and_window_come_from_the_block():
    """timm drops the shift (and clips the window) where a stage is not larger than the window: so does convert."""
    model = make("swin_tiny_patch4_window7_224")
    expected = [(tuple(b.window_size), tuple(b.shift_size)) for b in model.modules()
                if type(b).__name__ == "SwinTransformerBlock"]
    convert(model)
    got = [(m.attn.window_size, m.attn.shift) for m in model.modules() if isinstance(m, TransformerBlock)]
    assert got == expected
    assert expected[-1] == ((7, 7), (0, 0)) and expected[1] == ((7, 7), (3, 3))


def test_converted_model_trains():
    model = convert(make("maxvit_rmlp_pico_rw_256", torch.float32)).train()
    out = model(image((96, 160), torch.float32))
    out.square().mean().backward()
    grads = [p.grad for m in model.modules() if isinstance(m, (WindowAttention, GridAttention, ParallelAttention))
             for p in m.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_what_cannot_be_converted_is_named():
    with pytest.raises(ConversionError, match="NCHW"):
        convert(timm.create_model("maxvit_nano_rw_256", pretrained=False, transformer_use_nchw_attn=True,
                                  embed_dim=(32, 64, 96, 128), depths=(1, 1, 1, 1), stem_width=(16, 32)))
    for name in ("resnet10t", "swinv2_cr_tiny_ns_224"):  # not a family convert knows (timm's own Swin V2 "cr")
        with pytest.raises(ConversionError, match="no Swin"):
            convert(timm.create_model(name, pretrained=False))


def test_conversion_is_all_or_nothing_and_takes_a_model():
    model = make("maxvit_nano_rw_256")
    blocks = [m for m in model.modules() if type(m).__name__ == "PartitionAttentionCl"]
    blocks[-1].attn.proj.bias = None  # the last block cannot be converted
    with pytest.raises(ConversionError, match="without bias"):
        convert(model)
    assert not any(isinstance(m, TransformerBlock) for m in model.modules())
    with pytest.raises(ConversionError, match="is a block itself"):
        convert(blocks[0])


def test_dropout_probabilities_carry_over():
    swin = convert(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, embed_dim=32,
                                     depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), attn_drop_rate=0.1,
                                     proj_drop_rate=0.2))
    maxvit = convert(timm.create_model("maxvit_rmlp_pico_rw_256", pretrained=False, depths=(1, 1, 1, 1),
                                       transformer_attn_drop=0.1, transformer_proj_drop=0.2))
    layers = [m for model in (swin, maxvit) for m in model.modules() if isinstance(m, (WindowAttention, GridAttention))]
    assert layers and all((m.attn_drop, m.proj_drop.p) == (0.1, 0.2) for m in layers)
    mlp_biases = [m.position_biases[0] if isinstance(m, GridAttention) else m.relative_position_bias
                  for m in layers if m in set(maxvit.modules())]
    assert mlp_biases and all(b.drop.p == 0.125 for b in mlp_biases)  # timm's RelPosMlp dropout


def test_swin_v2_mask_value_of_timm_is_reproduced_at_capped_temperatures():
    """timm adds -100 between shifted-window regions; with cosine scores near 100 that is not a full mask (a key
    of another region outweighs allowed keys whose cosine is about 1 lower). ``mask_value=-100.0`` reproduces
    timm whatever the scores; the default masks exactly (on random weights the two agree to 1e-15, as the allowed
    keys are rarely that far below)."""
    model = make("swinv2_tiny_window8_256")
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "logit_scale"):
                module.logit_scale.fill_(5.0)  # exp(5) > 100: at the cap
    x = image(MODELS["swinv2_tiny_window8_256"][1], torch.float64, batch=1)
    with torch.no_grad():
        expected = model.forward_features(x)
        soft = convert(copy.deepcopy(model), mask_value=-100.0)
        assert all(m.mask_value == -100.0 for m in soft.modules() if isinstance(m, WindowAttention))
        assert relative_error(soft.forward_features(x), expected) <= 1e-10


def test_converted_swin_v2_runs_under_bfloat16_autocast():
    model = make("swinv2_tiny_window8_256", torch.float32)
    x = image(MODELS["swinv2_tiny_window8_256"][1], torch.float32, batch=1)
    with torch.no_grad():
        expected = model.forward_features(x)
        convert(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.forward_features(x)
    assert relative_error(out.float(), expected) < 0.05


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "maxvit_tiny_tf_224"])
def test_features_only_backbones_convert_and_run_at_any_size(name):
    """Detection and segmentation use timm's features_only wrappers at arbitrary sizes: every stage's features
    equal timm's blocks with the padding masked, the Swin stem padding images that are not patch multiples."""
    overrides = dict(MODELS[name][0], depths=(1, 1, 1, 1))
    model = timm.create_model(name, pretrained=False, features_only=True, **overrides).eval().double()
    reference = timm_reference.masked(copy.deepcopy(model))
    for module in reference.modules():
        if hasattr(module, "dynamic_img_pad"):
            module.strict_img_size, module.dynamic_img_pad = False, True
    convert(model)
    x = image((161, 98) if name.startswith("swin") else (160, 96), torch.float64, batch=1)
    with torch.no_grad():
        outs, refs = model(x), reference(x)
    assert len(outs) == len(refs) >= 4
    for out, ref in zip(outs, refs):
        assert relative_error(out, ref) <= 1e-10
