"""PSNR and SSIM as the super-resolution literature computes them.

Protocol: both images are ``uint8`` (float images in ``[0, 1]`` are rounded to ``uint8`` first); colour images
are compared on the Y channel of ITU-R BT.601 YCbCr, ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``
(not rounded); a grayscale image is its own Y channel; ``border`` pixels (the scale) are cropped from each
side. SSIM follows Wang et al.'s reference: 11x11 Gaussian window (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``,
'valid' filtering, mean of the SSIM map, no downsampling.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def as_uint8(image) -> np.ndarray:
    """``uint8`` numpy view of an image: uint8 as is, floats in ``[0, 1]`` rounded, tensors ``(C, H, W)``
    or ``(1, C, H, W)`` moved to ``(H, W, C)``.

    Floats are clipped to ``[0, 1]`` and rounded half up (``floor(x * 255 + 0.5)``), as a saved PNG would be.

    Raises:
        ValueError: a batch of more than one image, or a dtype that is neither uint8 nor floating.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 4:
            if image.shape[0] != 1:
                raise ValueError(f"metrics take one image, got a batch of {image.shape[0]}")
            image = image[0]
        if image.dim() == 3:
            image = image.permute(1, 2, 0)
        image = image.numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got {image.dtype}")
    return np.clip(np.floor(image.astype(np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def y_channel(image) -> np.ndarray:
    """BT.601 luma of an RGB image in ``[16, 235]`` as float64 ``(H, W)``; grayscale images as they are.

    Args:
        image: uint8 or float ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha ignored), or a
            tensor ``(C, H, W)`` / ``(1, C, H, W)``; floats are rounded to uint8 first (:func:`as_uint8`).

    Raises:
        ValueError: any other shape.
    """
    image = as_uint8(image).astype(np.float64)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {image.shape}")
    return 16.0 + (65.481 * image[..., 0] + 128.553 * image[..., 1] + 24.966 * image[..., 2]) / 255.0


def _prepare(a, b, border: int, y_only: bool) -> tuple[np.ndarray, np.ndarray]:
    a = y_channel(a) if y_only else as_uint8(a).astype(np.float64)
    b = y_channel(b) if y_only else as_uint8(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    if border < 0 or 2 * border >= min(a.shape[:2]):
        raise ValueError(f"border {border} leaves nothing of a {a.shape[0]}x{a.shape[1]} image")
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return a, b


def psnr(image, reference, *, border: int = 0, y_only: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); ``inf`` for identical images.

    Args:
        image: the super-resolved image: numpy uint8 / float in ``[0, 1]`` ``(H, W[, C])``, or a tensor
            ``(C, H, W)`` / ``(1, C, H, W)`` in ``[0, 1]``. Floats are rounded to uint8 first.
        reference: the ground truth, same size and kinds as ``image``.
        border: pixels cropped from each side before comparing (the literature crops ``scale``).
        y_only: compare the BT.601 Y channel (the protocol) instead of all channels.

    Raises:
        ValueError: images of different sizes, a ``border`` that leaves nothing, unsupported shapes or dtypes.

    Examples:
        >>> import numpy as np
        >>> from gridattn.metrics import psnr
        >>> hr = np.full((32, 32, 3), 128, np.uint8)
        >>> sr = hr.copy(); sr[0, 0] = 0
        >>> psnr(sr, hr, border=4)                          # the only error is in the cropped border
        inf
        >>> round(psnr(sr, hr), 2)
        37.41
    """
    a, b = _prepare(image, reference, border, y_only)
    mse = np.mean((a - b) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


SSIM_WINDOW = 11
"""Side of SSIM's Gaussian window: images must be at least this large after the border is cropped."""


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_1d()
    if min(a.shape) < len(g):
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after cropping, "
                         f"got {a.shape[0]}x{a.shape[1]}")
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    # the 11x11 Gaussian window (valid part) is separable: filter columns then rows, the five maps at once
    maps = torch.stack([x, y, x * x, y * y, x * y])[:, None]
    filtered = F.conv2d(F.conv2d(maps, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))[:, 0]
    mu_x, mu_y = filtered[0], filtered[1]
    sigma_x = filtered[2] - mu_x**2
    sigma_y = filtered[3] - mu_y**2
    sigma_xy = filtered[4] - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return float(ssim_map.mean())


def ssim(image, reference, *, border: int = 0, y_only: bool = True) -> float:
    """Structural similarity (Wang et al. 2004) on Y (or averaged over channels when ``y_only=False``).

    Args:
        image: the super-resolved image (kinds as :func:`psnr`).
        reference: the ground truth.
        border: pixels cropped from each side before comparing.
        y_only: compare the BT.601 Y channel (the protocol) instead of averaging over the channels.

    Returns:
        The mean of the SSIM map, 1.0 for identical images.

    Raises:
        ValueError: as :func:`psnr`, and images smaller than 11 x 11 after cropping.

    Examples:
        >>> import numpy as np
        >>> from gridattn.metrics import ssim
        >>> hr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        >>> ssim(hr, hr, border=2)
        1.0
    """
    a, b = _prepare(image, reference, border, y_only)
    if a.ndim == 2:
        return _ssim_single(a, b)
    return float(np.mean([_ssim_single(a[..., c], b[..., c]) for c in range(a.shape[2])]))
