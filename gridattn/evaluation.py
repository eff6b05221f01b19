"""Scoring a super-resolution model (or MATLAB bicubic) on a folder of benchmark images.

The protocol of the literature: LR images by MATLAB bicubic (or given), PSNR and SSIM on the Y channel with a
``scale``-pixel border removed (:mod:`gridattn.metrics`). The command line's ``evaluate``, the trainer's
validation and the recipe's per-stage table all score through :func:`evaluate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ._errors import InputError
from .data.benchmark import benchmark_pairs
from .data.imresize import imresize
from .functional.precision import compute_dtype
from .inference import Model, _placement, upscale
from .metrics import SSIM_WINDOW, psnr, ssim


@dataclass(frozen=True)
class ImageScore:
    """One image's scores (Y channel)."""

    image: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class Evaluation:
    """Per-image scores of a folder; ``psnr`` and ``ssim`` are their means."""

    scale: int
    per_image: tuple[ImageScore, ...]

    @property
    def psnr(self) -> float:
        return float(np.mean([s.psnr for s in self.per_image]))

    @property
    def ssim(self) -> float:
        return float(np.mean([s.ssim for s in self.per_image]))


def evaluate(
    model: Model | None,
    hr_folder: str | os.PathLike,
    scale: int,
    *,
    lr_folder: str | os.PathLike | None = None,
    tile: int | None = None,
    tile_overlap: int = 16,
    self_ensemble: bool = False,
    dtype: str | torch.dtype = "auto",
) -> Evaluation:
    """Y-PSNR / SSIM of ``model`` (``None``: MATLAB bicubic upsampling) on the images of ``hr_folder``.

    Args:
        model: a model for :func:`~gridattn.inference.upscale`, or ``None`` for the bicubic baseline.
        hr_folder: folder of HR images (see :func:`~gridattn.data.benchmark_pairs`).
        scale: upscaling factor; also the border left out of the scores.
        lr_folder: given LR images (matched by name) instead of MATLAB bicubic downscaling.
        tile: tile size of the model's inference (``None``: whole images, the protocol); tiles are much faster
            for grid attention on large images on a CPU.
        tile_overlap: overlap of the tiles.
        self_ensemble: average the 8 flips and rotations.
        dtype: what the model computes in (:func:`~gridattn.functional.compute_dtype`); ``"auto"`` is the
            weights' own dtype (float32: the benchmark protocol), ``"bfloat16"`` chooses the fast path.

    Raises:
        FileNotFoundError: a folder or a matching LR image is missing.
        InputError: no images, an unreadable image, an LR image of the wrong size, an image too small for
            SSIM's window once the border is removed.

    Example:
        >>> result = evaluate(None, "Set5/HR", 4)     # doctest: +SKIP
        >>> round(result.psnr, 2), round(result.ssim, 4)   # doctest: +SKIP
        (28.43, 0.8111)
    """
    if model is not None:
        dtype = compute_dtype(dtype, *_placement(model), auto_bfloat16=False)
    scores = []
    for name, hr, lr in benchmark_pairs(hr_folder, scale, lr_folder):
        if min(hr.shape[:2]) - 2 * scale < SSIM_WINDOW:
            raise InputError(f"{name}: {hr.shape[1]}x{hr.shape[0]} pixels leave less than {SSIM_WINDOW}x{SSIM_WINDOW} "
                             f"for SSIM once the {scale}-pixel border is removed")
        if model is None:
            sr = imresize(lr, scale)
        else:
            sr = upscale(model, lr, tile=tile, tile_overlap=tile_overlap, self_ensemble=self_ensemble, dtype=dtype)
        scores.append(ImageScore(name, psnr(sr, hr, border=scale), ssim(sr, hr, border=scale)))
    return Evaluation(scale, tuple(scores))
