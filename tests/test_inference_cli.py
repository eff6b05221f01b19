"""upscale(): tiling, self-ensemble, image kinds; the gridattn command line end to end."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from data_paths import DATA, needs_data
from torch import nn

from gridattn import WindowAttention
from gridattn.cli import main
from gridattn.data import read_image, write_image
from gridattn.inference import upscale
from gridattn.models import HMANet, hmanet_config, save_hmanet


class LocalNet(nn.Module):
    """A model whose receptive field is local: conv (radius 1) -> W-MSA (window 4) -> conv -> pixel shuffle.

    Its output at a pixel depends on inputs within its window plus 2 pixels, so tiles aligned to the window
    with an overlap of 4 * (4 + 2) reproduce the whole image."""

    config = SimpleNamespace(in_channels=3, pad_multiple=4)

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = WindowAttention(8, 2, 4)
        self.tail = nn.Conv2d(8, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        y = self.head(x).permute(0, 2, 3, 1)
        y = (y + self.attn(y)).permute(0, 3, 1, 2)
        return self.shuffle(self.tail(y))


@pytest.mark.parametrize("tile, overlap", [(16, 24), (20, 28), (24, 24)])
def test_tiles_equal_the_whole_image_when_the_overlap_covers_the_receptive_field(tile, overlap):
    torch.manual_seed(0)
    model = LocalNet().double()
    image = torch.rand(2, 3, 37, 45, dtype=torch.float64)
    whole = upscale(model, image)
    tiled = upscale(model, image, tile=max(tile, overlap + 4), tile_overlap=overlap, batch_tiles=3)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-12)


def test_tiles_without_enough_overlap_differ():
    torch.manual_seed(0)
    model = LocalNet().double()
    image = torch.rand(1, 3, 37, 45, dtype=torch.float64)
    assert (upscale(model, image, tile=16, tile_overlap=0) - upscale(model, image)).abs().max() > 1e-3


def test_self_ensemble_of_an_equivariant_function_is_the_function():
    def nearest_x2(x):
        return x.repeat_interleave(2, -1).repeat_interleave(2, -2) ** 2

    image = torch.rand(1, 3, 9, 14)
    torch.testing.assert_close(upscale(nearest_x2, image, self_ensemble=True), upscale(nearest_x2, image))
    # and of a non-equivariant one it is the average of the 8 transformed runs
    def shift_right(x):
        return torch.roll(nearest_x2(x), 1, -1)
    ensemble = upscale(shift_right, image, self_ensemble=True)
    assert not torch.allclose(ensemble, upscale(shift_right, image))


def test_image_kinds_round_trip():
    from PIL import Image

    model = HMANet(hmanet_config(2, "tiny")).eval()
    rgb = np.random.default_rng(0).integers(0, 256, (13, 17, 3)).astype(np.uint8)
    out = upscale(model, rgb)
    assert out.shape == (26, 34, 3) and out.dtype == np.uint8
    assert upscale(model, rgb[..., 0]).shape == (26, 34)
    rgba = np.dstack([rgb, np.full((13, 17), 200, np.uint8)])
    out_rgba = upscale(model, rgba)
    assert out_rgba.shape == (26, 34, 4) and (out_rgba[..., 3] == 200).all()
    assert upscale(model, Image.fromarray(rgb)).size == (34, 26)
    assert upscale(model, rgb.astype(np.float32) / 255).dtype == np.float32
    assert upscale(model, torch.rand(3, 13, 17)).shape == (3, 26, 34)
    with pytest.raises(ValueError, match="uint8, uint16 or float"):
        upscale(model, rgb.astype(np.int32))


@pytest.mark.parametrize("tile, self_ensemble, cached", [(None, False, False), (16, False, True), (None, True, True)])
def test_the_bias_cache_is_on_only_where_the_model_runs_more_than_once(tile, self_ensemble, cached):
    """One whole-image pass computes each bias once either way, so the cache would only hold memory; tiles and
    the ensemble reuse it. Seen from inside the forward, and nothing is left cached afterwards."""
    model = HMANet(hmanet_config(2, "tiny")).eval()
    biases = [m for m in model.modules() if hasattr(m, "_cache_enabled")]
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append({m._cache_enabled for m in biases}))
    upscale(model, np.zeros((32, 32, 3), np.uint8), tile=tile, tile_overlap=4, self_ensemble=self_ensemble)
    assert seen and all(states == {cached} for states in seen)
    assert not any(m._cache_enabled or m._cache for m in biases)


def test_model_mode_is_restored():
    model = HMANet(hmanet_config(2, "tiny")).train()
    upscale(model, torch.rand(1, 3, 8, 8))
    assert model.training


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_x2.pth"
    torch.manual_seed(0)
    save_hmanet(HMANet(hmanet_config(2, "tiny")), path)
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "gridattn", *map(str, args)], capture_output=True, text=True)


@needs_data
def test_cli_evaluate_bicubic_json_matches_literature():
    result = run_cli("evaluate", "--hr", DATA / "Set5" / "HR", "--scale", 4, "--bicubic", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 5 and abs(report["psnr"] - 28.42) < 0.02 and abs(report["ssim"] - 0.8104) < 0.002


@needs_data
def test_cli_evaluate_with_given_lr_and_with_a_model(tiny_checkpoint, capsys):
    assert main(["evaluate", "--hr", str(DATA / "Set5" / "HR"), "--scale", "2", "--bicubic", "--json",
                 "--lr", str(DATA / "Set5" / "LRbicx2")]) == 0
    assert abs(json.loads(capsys.readouterr().out)["psnr"] - 33.66) < 0.02
    assert main(["evaluate", "--hr", str(DATA / "Set5" / "HR"), "--scale", "2", "--checkpoint", str(tiny_checkpoint),
                 "--tile", "48"]) == 0
    table = capsys.readouterr().out
    assert "| mean" in table and "butterfly.png" in table


def test_cli_upscale_writes_pngs(tiny_checkpoint, tmp_path):
    inputs = tmp_path / "in"
    for name in ("a", "b"):
        write_image(inputs / f"{name}.png", np.random.default_rng(1).integers(0, 256, (10, 12, 3)).astype(np.uint8))
    result = run_cli("upscale", inputs, "-o", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--self-ensemble")
    assert result.returncode == 0, result.stderr
    assert read_image(tmp_path / "out" / "a.png").shape == (20, 24, 3)
    assert (tmp_path / "out" / "b.png").is_file()


def test_cli_errors_are_one_line_without_traceback(tiny_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"not an image")
    cases = [
        (["evaluate", "--hr", tmp_path / "missing", "--scale", 2, "--bicubic"], "no such file or folder"),
        (["evaluate", "--hr", tmp_path / "empty", "--scale", 2, "--bicubic"], "no images"),
        (["upscale", tmp_path / "broken.png", "-o", tmp_path / "out", "--checkpoint", tiny_checkpoint],
         "cannot read image"),
        (["upscale", tmp_path / "empty", "-o", tmp_path / "out", "--checkpoint", tmp_path / "none.pth"], "no images"),
        (["evaluate", "--hr", tmp_path / "hr", "--scale", 4, "--checkpoint", tiny_checkpoint], "x2 model, but scale 4"),
        (["evaluate", "--hr", tmp_path / "hr", "--scale", 4, "--bicubic", "--lr", tmp_path / "empty"],
         "no low-resolution image"),
        (["upscale", tmp_path / "broken.png", "-o", tmp_path / "o", "--checkpoint", tmp_path / "broken.png"],
         "cannot read"),
    ]
    write_image(tmp_path / "hr" / "hr.png", np.zeros((16, 16, 3), np.uint8))
    for args, message in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_benchmark_pairs_mod_crop_and_check_given_lr(tmp_path):
    from gridattn.data import benchmark_pairs, imresize

    hr = np.random.default_rng(2).integers(0, 256, (23, 30, 3)).astype(np.uint8)
    write_image(tmp_path / "hr" / "x.png", hr)
    (name, cropped, lr), = benchmark_pairs(tmp_path / "hr", 4)
    assert name == "x.png" and cropped.shape == (20, 28, 3) and np.array_equal(lr, imresize(hr[:20, :28], 1 / 4))
    write_image(tmp_path / "lr" / "x.jpg", np.zeros((6, 7, 3), np.uint8))
    with pytest.raises(ValueError, match="the LR image is 7x6, expected 7x5"):
        list(benchmark_pairs(tmp_path / "hr", 4, tmp_path / "lr"))


def test_tiling_bound_for_grid_attention():
    """docs/guides/evaluation.md: for a random tiny HMANet whose GAB residual scale is forced to 1 (grid attention far
    stronger than in trained models), tiles of 32 with overlap 16 stay >= 38 dB from the whole-image result
    (the trained tiny model: >= 61 dB). The tiles do differ: grid attention is global."""
    torch.manual_seed(0)
    model = HMANet(hmanet_config(2, "tiny")).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.scale.fill_(1.0)
    coarse = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    from gridattn.data import imresize
    from gridattn.metrics import psnr

    lr = imresize(coarse, size=(64, 64))
    whole = upscale(model, lr)
    tiled = upscale(model, lr, tile=32, tile_overlap=16)
    assert 38.0 <= psnr(tiled, whole, border=2) < float("inf")


def test_cli_export_onnx_and_verify(tiny_checkpoint, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    target = tmp_path / "tiny.onnx"
    result = run_cli("export-onnx", "--checkpoint", tiny_checkpoint, "-o", target, "--size", 20, 28, "--verify")
    assert result.returncode == 0, result.stderr
    assert target.is_file() and "input lr 1x3x20x28, x2" in result.stdout
    difference = float(result.stdout.split("max abs difference ")[1].split()[0])
    assert difference < 1e-4
    assert result.stderr.strip() == ""  # the exporters' chatter is silenced
    bad = run_cli("export-onnx", "--checkpoint", tiny_checkpoint, "-o", target, "--opset", 7)
    assert bad.returncode == 2 and "opset" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # compiles (about 25 to 90 s on 2 CPU cores)
def test_compiled_upscale_equals_eager_whole_and_tiled(tmp_path):
    """upscale(compile=True) and ``gridattn upscale --compile``: torch.compile'd HMANet, the same images as eager
    (inductor may reorder float sums: within 1e-5), whole images and tiles with a smaller last batch."""
    torch.manual_seed(0)
    model = HMANet(hmanet_config(2, "tiny")).eval()
    image = np.random.default_rng(0).random((37, 45, 3)).astype(np.float32)
    for tile in (None, 24):
        eager = upscale(model, image, tile=tile, tile_overlap=8, batch_tiles=4)
        compiled = upscale(model, image, tile=tile, tile_overlap=8, batch_tiles=4, compile=True)
        np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-5)
    checkpoint = tmp_path / "m.safetensors"
    save_hmanet(model, checkpoint)
    write_image(tmp_path / "in.png", (image * 255).round().astype(np.uint8))
    for flag in ([], ["--compile"]):
        out = tmp_path / f"out{len(flag)}.png"
        assert main(["upscale", str(tmp_path / "in.png"), "-o", str(out), "--checkpoint", str(checkpoint),
                     "--tile", "24", "--tile-overlap", "8", "--quiet", *flag]) == 0
    assert np.abs(read_image(tmp_path / "out0.png").astype(int) - read_image(tmp_path / "out1.png")).max() <= 1
