"""ONNX export of gridattn models (gridattn.export): onnxruntime against PyTorch, fixed and dynamic sizes, errors.

Tolerance: float32 graphs differ from PyTorch only in summation order (onnxruntime's MatMul / Conv kernels), which
gives ~1e-7 to 1e-6 on these small models and ~4e-7 on the official x4 one with random weights
(benchmarks/onnx_check.py); 1e-4 leaves a wide margin (trained weights, other CPUs) while a wrong mask, position
bias, padding or crop changes outputs by 1e-3 or more (or their shape).

The models carry random weights of a trained model's scale (:func:`realistic_`), not the initialisation, whose
zero biases and 0.02-scaled GAB branch shrink attention and mask errors about 50 times; a deliberately wrong
mask shows that the tolerance catches such an error.

Exports are slow (a dynamic one traces symbolic shapes: ~30-60 s on two busy cores), so the default run does two
dynamic exports (official numerics, and a window-16 model whose large inputs attend in blocks in PyTorch) and
two fixed ones; the other configurations are marked slow.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from gridattn.export import (  # noqa: E402
    DEFAULT_OPSET,
    INPUT_NAME,
    MIN_OPSET,
    OUTPUT_NAME,
    export_onnx,
    read_onnx_metadata,
    verify_onnx,
)
from gridattn.models import HMANet, HMANetConfig, build_model, hmanet_config  # noqa: E402

TOL = 1e-4
# multiples of the window (8) and not, smaller than a window down to 1x1, and different from the traced 32x32
DYNAMIC_SIZES = [(32, 32), (48, 40), (37, 53), (64, 64), (5, 3), (8, 17), (1, 1)]
NORMS = ("norm.weight", "norm1.weight", "norm2.weight", "expand_norm.weight")


def realistic_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights of a trained model's scale, in place: matrices and kernels with std 1/sqrt(fan-in), norm
    gains around 1, biases, position-bias tables and GAB's residual scale of order 0.1-1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() >= 2 and "relative_position_bias_table" not in name:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif name.endswith(NORMS):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(0.5 * noise)
    return model


def small_model(scale: int = 4, numerics: str = "corrected", image_skip: bool = True, depths=(1,), seed: int = 0,
                window_size: int = 8, heads: int = 2, embed_dim: int = 16):
    """Smallest HMANet with every kind of block: FusedConv, FAB, GAB (W-MSA, SW-MSA, grid attention)."""
    config = HMANetConfig(scale=scale, embed_dim=embed_dim, depths=depths, num_heads=(heads,) * len(depths),
                          window_size=window_size, upsample_features=16, drop_path_rate=0.0, numerics=numerics,
                          image_skip=image_skip)
    return realistic_(HMANet(config), seed).eval()


def warm_caches(model: HMANet, *sizes) -> None:
    """Fill the eval-mode caches (position biases, masks) for other sizes than the export's."""
    with torch.no_grad():
        for size in sizes:
            model(torch.rand(1, 3, *size))


def check_close(results, sizes, tol=TOL):
    assert [size for size, _ in results] == [tuple(s) for s in sizes]
    worst = max(diff for _, diff in results)
    assert worst < tol, results


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory):
    model = small_model(scale=4, numerics="official", image_skip=True)
    warm_caches(model, (24, 24), (37, 53))  # caches hold other sizes than the traced one: must not leak in
    path = tmp_path_factory.mktemp("onnx") / "hmanet_dynamic.onnx"
    info = export_onnx(model, path, dynamic=True, example_size=(32, 32))
    return model, info


def test_dynamic_export_matches_pytorch_at_other_sizes(dynamic_export):
    model, info = dynamic_export
    check_close(verify_onnx(info.path, model, DYNAMIC_SIZES), DYNAMIC_SIZES)
    check_close(verify_onnx(info.path, model, [(17, 9)], batch_size=3), [(17, 9)])  # any batch


def test_dynamic_export_graph_names_shapes_and_metadata(dynamic_export):
    model, info = dynamic_export
    import onnx

    proto = onnx.load(str(info.path))
    assert [i.name for i in proto.graph.input] == [INPUT_NAME] and [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    out_dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch", 3, "4*height", "4*width"]
    assert info.dynamic and info.input_shape == (None, 3, None, None)
    assert info.scale == 4 and info.opset == DEFAULT_OPSET
    meta = read_onnx_metadata(info.path)
    assert meta["scale"] == 4 and meta["dynamic"] is True and meta["numerics"] == "official"
    assert meta["pad_multiple"] == model.config.pad_multiple
    stored = meta["config"]
    assert HMANetConfig.from_dict(stored) == model.config
    assert {p.key: p.value for p in proto.metadata_props} == info.metadata
    session = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)rank"):  # the graph takes (B, C, H, W) only
        session.run(None, {INPUT_NAME: np.zeros((3, 16, 16), np.float32)})


def test_fixed_size_export(tmp_path):
    model = small_model(scale=2, numerics="official", image_skip=False)
    model.train()  # export must not change the caller's model
    warm_caches(model.eval(), (16, 16))
    model.train()
    info = export_onnx(model, tmp_path / "sub" / "fixed.onnx", example_size=(20, 28))  # not a multiple of 8
    assert model.training
    assert info.input_shape == (1, 3, 20, 28) and info.output_shape == (1, 3, 40, 56) and not info.dynamic
    check_close(verify_onnx(info.path, model, [(20, 28)]), [(20, 28)])
    assert model.training  # verify_onnx restores the training flag too
    with pytest.raises(ValueError, match="fixed to input shape"):
        verify_onnx(info.path, model, [(20, 28), (32, 32)])
    with pytest.raises(ValueError, match="fixed to batch 1"):
        verify_onnx(info.path, model, [(20, 28)], batch_size=2)
    assert read_onnx_metadata(info.path)["input_shape"] == [1, 3, 20, 28]


def test_export_without_the_graph_optimiser(tmp_path):
    """optimize=False keeps the exporter's raw graph; it must still be valid ONNX (a buffer named like one of the
    exporter's own values once broke single assignment) and compute the same."""
    model = small_model(scale=2, numerics="corrected", image_skip=True)
    info = export_onnx(model, tmp_path / "raw.onnx", example_size=(20, 28), optimize=False)
    check_close(verify_onnx(info.path, model, [(20, 28)]), [(20, 28)])


def test_dynamic_export_of_windows_that_pytorch_attends_in_blocks(tmp_path):
    """Window 16 with 6 heads: PyTorch attends in blocks of 42 windows (``max_scores``), so a 112x112 input (49
    windows) runs two blocks; the traced graph must not keep the example's single block."""
    model = small_model(scale=2, window_size=16, heads=6, embed_dim=24, image_skip=False)
    info = export_onnx(model, tmp_path / "w16.onnx", dynamic=True, example_size=(48, 48))
    sizes = [(48, 48), (112, 112), (1, 1)]
    check_close(verify_onnx(info.path, model, sizes), sizes)


def test_a_wrong_mask_is_caught(tmp_path, monkeypatch):
    """Negative control: exported without the shifted-window / padding mask, the file differs from PyTorch by
    far more than the tolerance (with these weights), so the comparisons above would catch a mask error."""
    import gridattn.layers.window_attention as window_attention

    model = small_model(scale=2, image_skip=False)
    monkeypatch.setattr(window_attention, "window_attention_mask", lambda *args, **kwargs: None)
    info = export_onnx(model, tmp_path / "unmasked.onnx", example_size=(20, 28))  # padded: 24 x 32
    monkeypatch.undo()
    ((_, difference),) = verify_onnx(info.path, model, [(20, 28)])
    assert difference > 100 * TOL, difference


class NotHMANet(torch.nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(model=NotHMANet()), TypeError, "HMANet"),
        (dict(opset=MIN_OPSET - 1), ValueError, "opset"),
        (dict(opset=99), ValueError, "opset"),
        (dict(opset=18.0), ValueError, "opset"),
        (dict(example_size=(16, 16, 3)), ValueError, "example_size"),
        (dict(example_size=(0, 16)), ValueError, "example_size"),
        (dict(example_size="16x16"), ValueError, "example_size"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(attention_backend="xformers"), ValueError, "attention_backend"),
        (dict(dynamic="yes"), ValueError, "dynamic"),
        (dict(dynamic=True, example_size=(8, 64)), ValueError, "padding multiple 8"),
    ],
)
def test_export_argument_errors(tmp_path, kwargs, error, match):
    args = dict(model=small_model(), path=tmp_path / "x.onnx") | kwargs
    with pytest.raises(error, match=match):
        export_onnx(**args)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("sizes", [[], [(0, 4)], [(4, 4, 4)], ["4x4"]])
def test_verify_argument_errors(dynamic_export, sizes):
    model, info = dynamic_export
    with pytest.raises(ValueError, match="size"):
        verify_onnx(info.path, model, sizes)


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_missing_packages_give_install_hint(tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'gridattn\[onnx\]'"):
        export_onnx(small_model(), tmp_path / "x.onnx")


def test_missing_onnxruntime_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"gridattn\[onnx\]"):
        verify_onnx(tmp_path / "x.onnx", small_model(), [(8, 8)])


@pytest.mark.slow
@pytest.mark.parametrize(
    "scale, numerics, image_skip",
    [(2, "corrected", False), (2, "official", True), (4, "official", False), (2, "corrected", True)],
)
def test_dynamic_export_configurations(tmp_path, scale, numerics, image_skip):
    model = small_model(scale=scale, numerics=numerics, image_skip=image_skip, depths=(2,))
    warm_caches(model, (40, 40))
    info = export_onnx(model, tmp_path / "m.onnx", dynamic=True, example_size=(27, 41))  # not multiples
    check_close(verify_onnx(info.path, model, DYNAMIC_SIZES), DYNAMIC_SIZES)


@pytest.mark.slow
@pytest.mark.parametrize("opset, backend", [(MIN_OPSET, "sdpa"), (20, "math"), (23, "sdpa")])
def test_opsets_and_backends(tmp_path, opset, backend):
    model = small_model(scale=2, numerics="corrected", image_skip=True)
    info = export_onnx(model, tmp_path / "m.onnx", dynamic=True, opset=opset, attention_backend=backend)
    assert info.opset == opset
    import onnx

    assert {o.domain: o.version for o in onnx.load(str(info.path)).opset_import}[""] == opset
    check_close(verify_onnx(info.path, model, [(32, 32), (37, 53)]), [(32, 32), (37, 53)])


@pytest.mark.slow
def test_tiny_preset_fixed_and_dynamic(tmp_path):
    torch.manual_seed(0)
    model = HMANet(hmanet_config(3, "tiny")).eval()
    fixed = export_onnx(model, tmp_path / "fixed.onnx", example_size=(24, 24), batch_size=2)
    check_close(verify_onnx(fixed.path, model, [(24, 24)]), [(24, 24)])
    dynamic = export_onnx(model, tmp_path / "dynamic.onnx", dynamic=True, example_size=(24, 24))
    check_close(verify_onnx(dynamic.path, model, [(24, 24), (29, 31), (48, 64)]), [(24, 24), (29, 31), (48, 64)])
    assert HMANetConfig.from_dict(read_onnx_metadata(dynamic.path)["config"]) == model.config


@pytest.mark.parametrize("arch_name", ["swinir", "hat", "dat"])
def test_dynamic_export_of_models_that_pad_inside_their_layers(tmp_path, arch_name):
    """SwinIR, HAT and DAT (corrected numerics) pad and mask inside their attention layers. Traced at a multiple of
    the window, the graph held only the path without padding, and onnxruntime failed at 13x21 (a broadcast of 21
    by 24); the export now traces the padding path, and every size matches PyTorch."""
    from gridattn.models import get_architecture

    config = get_architecture(arch_name).preset("tiny", 2).replace(embed_dim=16, depths=(2,), num_heads=(2,))
    model = build_model(config.replace(squeeze_factor=4) if arch_name == "hat" else config).eval()
    info = export_onnx(model, tmp_path / f"{arch_name}.onnx", dynamic=True, example_size=(24, 24))
    for size, difference in verify_onnx(info.path, model, [(24, 24), (13, 21), (8, 8), (40, 17)]):
        assert difference < 1e-5, (size, difference)
