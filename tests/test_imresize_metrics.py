"""MATLAB-exact imresize and the Y-channel PSNR / SSIM of the literature."""

import math

import numpy as np
import pytest
import torch
from data_paths import DATA, needs_data
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

from gridattn.data import imresize, list_images, modcrop, read_image
from gridattn.metrics import psnr, ssim, y_channel


def matlab_loop(image: np.ndarray, out_h: int, out_w: int, scale_h: float, scale_w: float) -> np.ndarray:
    """MATLAB's imresize written out pixel by pixel (float64, height pass then width pass, no rounding)."""
    def cubic(x):
        ax = abs(x)
        if ax <= 1:
            return 1.5 * ax**3 - 2.5 * ax**2 + 1
        if ax <= 2:
            return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
        return 0.0

    def mirror(i, length):  # 0-based, symmetric (edge repeated)
        i %= 2 * length
        return i if i < length else 2 * length - 1 - i

    def one_pass(rows, out_len, scale):
        in_len = rows.shape[0]
        width = 4 / scale if scale < 1 else 4
        out = np.zeros((out_len,) + rows.shape[1:])
        for x in range(1, out_len + 1):
            u = x / scale + 0.5 * (1 - 1 / scale)
            left = math.floor(u - width / 2)
            taps = [left + k for k in range(math.ceil(width) + 2)]
            weights = [scale * cubic(scale * (u - t)) if scale < 1 else cubic(u - t) for t in taps]
            total = sum(weights)
            for t, w in zip(taps, weights):
                out[x - 1] += w / total * rows[mirror(t - 1, in_len)]
        return out

    first = one_pass(image.astype(np.float64), out_h, scale_h)
    return one_pass(first.swapaxes(0, 1), out_w, scale_w).swapaxes(0, 1)


@given(seed=seeds, height=st.integers(1, 14), width=st.integers(1, 14),
       scale=st.sampled_from([1 / 2, 1 / 3, 1 / 4, 2, 3, 4]))
def test_imresize_matches_pixel_loop_and_torch_matches_numpy(seed, height, width, scale):
    image = np.random.default_rng(seed).random((height, width, 2))
    out = imresize(image, scale)
    out_h, out_w = math.ceil(height * scale), math.ceil(width * scale)
    np.testing.assert_allclose(out, matlab_loop(image, out_h, out_w, scale, scale), rtol=0, atol=1e-12)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    np.testing.assert_allclose(imresize(tensor, scale)[0].permute(1, 2, 0).numpy(), out, rtol=0, atol=1e-12)
    out32 = imresize(tensor.float(), scale)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32[0].permute(1, 2, 0).numpy(), out, rtol=0, atol=1e-5)


def test_imresize_size_argument_batches_and_gradients():
    x = torch.rand(2, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    out = imresize(x, size=(4, 11))
    assert out.shape == (2, 3, 4, 11)
    assert torch.allclose(out[1:], imresize(x[1:], size=(4, 11)))
    torch.autograd.gradcheck(lambda t: imresize(t, size=(4, 5)), (x[:1, :1].detach().requires_grad_(),))
    with pytest.raises(ValueError, match="exactly one of scale and size"):
        imresize(x, 0.5, (4, 4))
    with pytest.raises(ValueError, match="float"):
        imresize(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 0.5)


@needs_data
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_every_pixel_of_matlab_set5_lr_is_reproduced(scale):
    for path in list_images(DATA / "Set5" / "HR"):
        lr = imresize(modcrop(read_image(path), scale), 1 / scale)
        matlab = read_image(DATA / "Set5" / f"LRbicx{scale}" / path.name)
        assert lr.dtype == np.uint8 and lr.shape == matlab.shape
        assert np.array_equal(lr, matlab), f"{path.name}: {(lr != matlab).sum()} pixels differ"


LITERATURE = {  # bicubic upsampling, Y-channel PSNR (dB) / SSIM, DESIGN section 4
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
}


@needs_data
@pytest.mark.parametrize("dataset, scale", sorted(LITERATURE))
def test_bicubic_baselines_of_the_literature(dataset, scale):
    scores = []
    for path in list_images(DATA / dataset / "HR"):
        hr = modcrop(read_image(path), scale)
        sr = imresize(imresize(hr, 1 / scale), scale)
        scores.append((psnr(sr, hr, border=scale), ssim(sr, hr, border=scale)))
    mean_psnr, mean_ssim = np.mean(scores, axis=0)
    assert abs(mean_psnr - LITERATURE[dataset, scale][0]) < 0.02
    assert abs(mean_ssim - LITERATURE[dataset, scale][1]) < 0.002


def test_psnr_by_hand():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[1, 2] = 10
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (100 / 16)))
    assert psnr(a, a) == math.inf
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[..., 0] = 255
    assert y_channel(rgb)[0, 0] == pytest.approx(16 + 65.481)
    assert psnr(rgb, np.zeros_like(rgb)) == pytest.approx(10 * math.log10(255**2 / 65.481**2))
    # the border is cropped before comparing; floats in [0, 1] are rounded to uint8 first
    framed = np.zeros((6, 6), np.uint8)
    framed[0] = 200
    assert psnr(framed, np.zeros_like(framed), border=1) == math.inf
    assert psnr(np.full((4, 4), 0.5), np.full((4, 4), 128, np.uint8)) == math.inf


def test_ssim_by_hand_and_grayscale_is_its_own_y():
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = np.full((11, 11), 100, np.uint8), np.full((11, 11), 140, np.uint8)
    # constant images: both variances and the covariance are 0, so the contrast-structure term is c2 / c2 = 1
    assert ssim(x, y) == pytest.approx(
        (2 * 100 * 140 + c1) / (100**2 + 140**2 + c1) * (2 * 0 + c2) / (0 + 0 + c2)
    )
    assert ssim(x, x) == pytest.approx(1.0)
    gray = np.random.default_rng(0).integers(0, 256, (20, 20)).astype(np.uint8)
    assert np.array_equal(y_channel(gray), gray.astype(np.float64))
    noisy = np.clip(gray.astype(int) + 7, 0, 255).astype(np.uint8)
    assert 0 < ssim(noisy, gray) < 1
    with pytest.raises(ValueError, match="differ in size"):
        psnr(gray, gray[:10])


@given(seed=st.integers(0, 2**16), height=st.integers(11, 16), width=st.integers(11, 16))
def test_ssim_matches_a_window_by_window_loop(seed, height, width):
    """Wang et al.: mean over every valid 11x11 window of the Gaussian-weighted (sigma 1.5) SSIM."""
    rng = np.random.default_rng(seed)
    a, b = (rng.integers(0, 256, (height, width)).astype(np.uint8) for _ in range(2))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    weights = np.outer(g, g) / np.outer(g, g).sum()
    values = []
    for i in range(height - 10):
        for j in range(width - 10):
            x, y = a[i:i + 11, j:j + 11].astype(np.float64), b[i:i + 11, j:j + 11].astype(np.float64)
            mx, my = (weights * x).sum(), (weights * y).sum()
            vx, vy = (weights * x * x).sum() - mx**2, (weights * y * y).sum() - my**2
            cov = (weights * x * y).sum() - mx * my
            values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert ssim(a, b) == pytest.approx(np.mean(values), rel=1e-10)


@needs_data
def test_evaluate_without_a_model_scores_bicubic():
    from gridattn.evaluation import evaluate

    result = evaluate(None, str(DATA / "Set5" / "HR"), 4)
    mean_psnr, mean_ssim = result.psnr, result.ssim
    assert abs(mean_psnr - LITERATURE["Set5", 4][0]) < 0.02
    assert abs(mean_ssim - LITERATURE["Set5", 4][1]) < 0.002
