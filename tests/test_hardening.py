"""Bad input everywhere: every public entry point either works correctly or raises its documented error.

Documented errors: ``ValueError`` / ``TypeError`` from the layers and models (wrong rank, channels, dtype,
empty), ``ValueError`` from ``upscale`` and ``read_image`` (kinds, NaN / Inf, ranges, undecodable files,
images too large for memory), exit status 2 and one line on stderr from the command line.
"""

import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import at_least
from test_layer_properties import DIM
from test_layer_properties import LAYERS as LAYERS_WITH_REFERENCES

from gridattn.cli import main
from gridattn.data import read_image, write_image
from gridattn.inference import ImageTooLargeError, upscale
from gridattn.memory import CUDA_WORKSPACES, estimate_inference_memory, weight_bytes
from gridattn.models import HMANet, hmanet_config

LAYERS = {name: build for name, (build, _) in LAYERS_WITH_REFERENCES.items()}
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.uint8, torch.bool]
SPECIAL = [0.0, float("nan"), float("inf"), -float("inf"), 1e30]


@st.composite
def arbitrary_tensors(draw, channels: int, channel_dim: int = -1, max_side: int = 7):
    """Half the time a well-formed 4-D map (``channels`` at ``channel_dim``, sides >= 1), otherwise any rank 0-5
    and any sizes (0 included); any dtype; sometimes a NaN, Inf or huge value."""
    if draw(st.booleans()):
        shape = [draw(st.integers(1, max_side)) for _ in range(4)]
        shape[channel_dim] = channels
    else:
        rank = draw(st.integers(0, 5))
        shape = [draw(st.integers(0, max_side)) for _ in range(rank)]
        if rank and draw(st.booleans()):
            shape[-1 if draw(st.booleans()) else min(1, rank - 1)] = channels
    dtype = draw(st.sampled_from(DTYPES))
    x = torch.rand(shape, dtype=torch.float64)
    special = draw(st.sampled_from(SPECIAL))
    if special and x.numel() and draw(st.booleans()):
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = special
    return x.to(dtype) if dtype != torch.bool else x > 0.5


def _answers_or_refuses(module, x, expected_shape):
    """Output of the expected shape (finite for a finite input) or a ValueError / TypeError."""
    try:
        with torch.no_grad():
            y = module(x)
    except (ValueError, TypeError) as error:
        assert str(error), "errors must say what is wrong"
        return None
    assert tuple(y.shape) == expected_shape(x)
    if x.is_floating_point() and x.numel() and torch.isfinite(x).all() and x.abs().max() < 1e20:
        assert torch.isfinite(y).all()
    return y


@pytest.mark.parametrize("name", sorted(LAYERS))
@given(x=arbitrary_tensors(DIM), weights=st.sampled_from([torch.float32, torch.float64, "input"]))
def test_layers_answer_or_refuse_any_tensor(name, x, weights):
    layer = LAYERS[name]().eval()
    if weights == "input" and x.is_floating_point():
        layer = layer.to(x.dtype)
    elif weights == torch.float64:
        layer = layer.double()
    _answers_or_refuses(layer, x, lambda t: tuple(t.shape))


@settings(max_examples=at_least(20))  # the input space is wide
@given(x=arbitrary_tensors(3, channel_dim=1, max_side=9), double=st.booleans())
def test_hmanet_answers_or_refuses_any_tensor(x, double):
    model = HMANet(hmanet_config(2, "tiny")).eval()
    _answers_or_refuses(model.double() if double else model, x,
                        lambda t: (t.shape[0], 3, 2 * t.shape[2], 2 * t.shape[3]))


@st.composite
def arbitrary_arrays(draw):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.integers(0, 6)) for _ in range(ndim))
    if ndim == 3 and draw(st.booleans()):
        shape = (*shape[:2], draw(st.sampled_from([1, 2, 3, 4])))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_, np.float16]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if np.issubdtype(dtype, np.integer):
        array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    else:
        array = rng.random(shape).astype(dtype)
        if array.size and draw(st.booleans()):
            array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -0.5, 255.0]))
    return array


@settings(max_examples=at_least(30))
@given(image=arbitrary_arrays())
def test_upscale_answers_or_refuses_any_array(image):
    model = HMANet(hmanet_config(2, "tiny")).eval()
    try:
        out = upscale(model, image)
    except ValueError as error:
        assert str(error)
        return
    # what is accepted: uint8 / uint16 / float in [0, 1], (H, W) or (H, W, C) with C in 1, 3, 4
    assert image.dtype in (np.uint8, np.uint16, np.float32, np.float64, np.float16) and image.ndim in (2, 3)
    assert out.dtype == image.dtype and out.shape[:2] == (2 * image.shape[0], 2 * image.shape[1])
    if np.issubdtype(image.dtype, np.floating):
        assert np.isfinite(image).all() and 0 <= image.min() and image.max() <= 1
        assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


def test_upscale_refuses_what_cannot_fit_before_running(monkeypatch):
    import gridattn.inference as inference

    model = HMANet(hmanet_config(4)).eval()  # the official x4 model
    monkeypatch.setattr(inference, "available_memory", lambda device: 2**30)
    called = []
    monkeypatch.setattr(model, "forward", lambda x: called.append(x))
    image = np.zeros((600, 800, 3), np.uint8)
    with pytest.raises(ImageTooLargeError, match=r"upscaling 800x600 pixels needs about \d+\.\d GiB on cpu, "
                                                 r"but 1\.0 GiB are available: pass tile=\d+ \(command line: --tile"):
        upscale(model, image)
    tile = int(str(pytest.raises(ImageTooLargeError, upscale, model, image).value).split("tile=")[1].split()[0])
    assert estimate_inference_memory(model.config, tile, tile, batch=4) <= 2**29 and not called
    with pytest.raises(ImageTooLargeError, match="in tiles of 512"):
        upscale(model, image, tile=512)
    monkeypatch.setattr(inference, "available_memory", lambda device: 2**20)
    with pytest.raises(ImageTooLargeError, match="host memory"):
        upscale(model, image)
    assert not called


def test_memory_estimate_grows_with_the_padded_size():
    config = hmanet_config(4, "tiny")
    multiple = config.pad_multiple
    base = estimate_inference_memory(config, multiple, multiple)
    # the same padded map: only the input and its padding differ
    assert abs(estimate_inference_memory(config, 1, 1) - base) < 0.05 * base
    assert estimate_inference_memory(config, multiple + 1, multiple) > base
    assert estimate_inference_memory(config, multiple, multiple, batch=3) > base
    assert estimate_inference_memory(config, 64, 64, dtype=torch.bfloat16) < estimate_inference_memory(config, 64, 64)
    weights = sum(p.numel() * 4 for p in HMANet(config).parameters())
    assert weight_bytes(config) == weights
    assert estimate_inference_memory(config, 8, 8, device="cuda") == base + CUDA_WORKSPACES


@pytest.mark.parametrize("arch, preset, scale", [("hmanet", "tiny", 4), ("swinir", "tiny", 2), ("hat", "tiny", 3),
                                                ("dat", "tiny", 2)])
def test_meta_trace_bounds_the_tensors_a_real_forward_keeps_alive(arch, preset, scale):
    """The meta-device trace of every architecture counts what the same counter sees in a real CPU forward (to
    10 %: CPU kernels' own buffers; estimate_inference_memory adds a 25 % margin), and not wildly more (the
    CPU's fused attention materialises less than the meta trace)."""
    from gridattn.memory import _LiveBytes, traced_activation_bytes
    from gridattn.models import build_model, get_architecture

    config = get_architecture(arch).preset(preset, scale)
    model = build_model(config).eval()
    for height, width in [(16, 16), (21, 13)]:
        counter = _LiveBytes()
        image = torch.rand(1, 3, height, width)
        with torch.no_grad(), counter:
            model(image)
        real = counter.peak + image.numel() * 4
        traced = traced_activation_bytes(config, height, width, 1, torch.float32)
        assert 0.9 * real <= traced <= 3 * real, (arch, height, width, real, traced)


def _png(path, array: np.ndarray) -> None:
    """Write a PNG by hand (16-bit colour, which PIL cannot write): 8/16-bit gray or RGB(A)."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    depth = 16 if array.dtype == np.uint16 else 8
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = array.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_image_files_of_every_kind(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    gray16 = rng.integers(0, 65536, (9, 11)).astype(np.uint16)
    _png(tmp_path / "gray16.png", gray16)
    expected = np.floor(gray16.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    assert np.array_equal(read_image(tmp_path / "gray16.png"), expected)
    rgb16 = rng.integers(0, 65536, (9, 11, 3)).astype(np.uint16)
    _png(tmp_path / "rgb16.png", rgb16)
    rgb = read_image(tmp_path / "rgb16.png")
    assert rgb.shape == (9, 11, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - rgb16.astype(int) // 257).max() <= 1
    la = rng.integers(0, 256, (9, 11, 2)).astype(np.uint8)
    _png(tmp_path / "la.png", la)
    assert read_image(tmp_path / "la.png").shape == (9, 11, 4)
    palette = Image.fromarray(rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)).convert("P")
    palette.save(tmp_path / "palette.png", transparency=0)
    assert read_image(tmp_path / "palette.png").shape == (9, 11, 4)
    Image.fromarray(rng.integers(0, 2, (9, 11)).astype(bool)).save(tmp_path / "bilevel.png")
    assert set(np.unique(read_image(tmp_path / "bilevel.png"))) <= {0, 255}
    Image.fromarray(rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg").shape == (9, 11, 3)
    Image.fromarray(rng.random((9, 11)).astype(np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match="floating-point image files are not supported"):
        read_image(tmp_path / "float.tiff")


def _bad_files(folder):
    """name -> bytes of files that are not usable images."""
    good = folder / "good.png"
    write_image(good, np.zeros((20, 20, 3), np.uint8))
    data = good.read_bytes()
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
            + struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
    bomb += struct.pack(">I", zlib.crc32(bomb[12:29]))
    return {"empty.png": b"", "truncated.png": data[: len(data) // 2], "text.png": b"hello",
            "header-only.png": data[:8], "bomb.png": bomb}


def test_unusable_image_files_raise_value_error(tmp_path):
    for name, content in _bad_files(tmp_path).items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"cannot read image .*{name}"):
            read_image(tmp_path / name)


def test_info_reports_versions_and_backends(capsys):
    import json

    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["versions"]["torch"] == torch.__version__
    cpu = report["devices"]["cpu"]["attention"]
    assert cpu["float32"]["sdpa"] == "ok" and cpu["float32"]["math"] == "ok"
    assert cpu["float32"]["xformers"] != "ok"  # xformers never runs on a CPU; the reason is given
    assert "xformers" in cpu["float32"]["xformers"]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_input_on_another_device_than_the_weights_is_refused(name):
    """On a machine without a GPU the weights go to the meta device; tests/test_cuda.py does it with CUDA."""
    layer = LAYERS[name]().to("meta")
    with pytest.raises(ValueError, match="is on cpu but the layer's weights are on meta"):
        layer(torch.rand(1, 5, 6, DIM))
    with pytest.raises(ValueError, match="is on cpu but the layer's weights are on meta"):
        HMANet(hmanet_config(2, "tiny")).to("meta")(torch.rand(1, 3, 5, 6))


def test_gray_alpha_images_keep_their_alpha(tmp_path):
    from PIL import Image

    model = HMANet(hmanet_config(2, "tiny")).eval()
    la = np.random.default_rng(3).integers(0, 256, (6, 5, 2)).astype(np.uint8)
    la[..., 1] = 77
    out = upscale(model, la)
    assert out.shape == (12, 10, 2) and (out[..., 1] == 77).all()
    assert np.array_equal(out[..., 0], upscale(model, la[..., 0]))  # the gray channel as without alpha
    pil = upscale(model, Image.fromarray(la, "LA"))
    assert pil.mode == "LA" and pil.size == (10, 12)
    read_only = la[..., 0].copy()
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch.from_numpy
        upscale(model, read_only)


def test_images_beyond_the_decompression_bomb_limit_are_refused(tmp_path, monkeypatch):
    from PIL import Image

    write_image(tmp_path / "a.png", np.zeros((100, 100, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10000 pixels: between 1x and 2x the limit
    with pytest.raises(ValueError, match="cannot read image .*a.png"):
        read_image(tmp_path / "a.png")


def test_pil_images_are_converted_as_image_files_are():
    """upscale takes a PIL image's pixels as read_image would (pil_pixels): 16-bit grayscale is rounded to 8
    bits, not clipped; bilevel stays grayscale."""
    from PIL import Image

    from gridattn.data import pil_pixels

    model = HMANet(hmanet_config(2, "tiny")).eval()
    gray16 = Image.fromarray((np.arange(48).reshape(6, 8) * 1000).astype(np.uint16))
    assert np.array_equal(pil_pixels(gray16), np.floor(np.arange(48).reshape(6, 8) * 1000 * 255 / 65535 + 0.5))
    assert np.array_equal(np.asarray(upscale(model, gray16)), upscale(model, pil_pixels(gray16)))
    assert upscale(model, Image.fromarray(np.eye(6, 8, dtype=bool))).mode == "L"
