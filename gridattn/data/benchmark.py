"""Benchmark folders: HR images (Set5 / Set14 layout, or any folder of PNG / JPEG) and their LR inputs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._errors import InputError
from .images import IMAGE_SUFFIXES, list_images, modcrop, read_image
from .imresize import imresize


class BenchmarkPair(NamedTuple):
    """One image of a benchmark folder, as :func:`benchmark_pairs` yields it.

    Attributes:
        name: the HR file name (``"baby.png"``).
        hr: ``uint8`` ``(H, W, 3)`` or ``(H, W)``, cropped to a multiple of the scale.
        lr: ``uint8`` ``(H / scale, W / scale, ...)``, made by MATLAB bicubic or read from the LR folder.
    """

    name: str
    hr: np.ndarray  # uint8 (H, W, 3) or (H, W), cropped to a multiple of the scale
    lr: np.ndarray  # uint8 (H / scale, W / scale, ...)


def _find(folder: Path, name: str) -> Path:
    for candidate in sorted(folder.glob(f"{Path(name).stem}.*")):
        if candidate.suffix.lower() in IMAGE_SUFFIXES:
            return candidate
    raise FileNotFoundError(f"no low-resolution image for {name} in {folder}")


def _without_alpha(image: np.ndarray) -> np.ndarray:
    return image[..., :3] if image.ndim == 3 else image


def benchmark_pairs(
    hr_folder: str | os.PathLike, scale: int, lr_folder: str | os.PathLike | None = None
) -> Iterator[BenchmarkPair]:
    """HR images of a folder, mod-cropped to ``scale``, with LR images made by MATLAB bicubic (or read from
    ``lr_folder``, matched by file name stem, and checked to be ``scale`` times smaller).

    Alpha channels are dropped; grayscale images stay ``(H, W)``. The folders are checked when this is called
    (before a model is loaded, say); the images are read lazily, one per step.

    Args:
        hr_folder: folder of HR images (not searched recursively).
        scale: the upscaling factor; HR images are cropped to multiples of it.
        lr_folder: optional folder of given LR images, matched by file name stem (``baby.png`` takes
            ``baby.png`` or ``baby.bmp``, not ``baby_x4.png``).

    Yields:
        [`BenchmarkPair`][gridattn.data.BenchmarkPair] ``(name, hr, lr)`` per image, sorted by file name.

    Raises:
        FileNotFoundError: a folder or a matching LR image is missing.
        InputError: ``hr_folder`` is a file, no images, an unreadable image, or an LR image of the wrong size.
    """
    if Path(hr_folder).is_file():
        raise InputError(f"{hr_folder} is a file: give the folder of HR images")
    hr_files = list_images(hr_folder)
    if lr_folder is not None and not Path(lr_folder).is_dir():
        raise FileNotFoundError(f"no such folder: {lr_folder}")
    return _pairs(hr_files, scale, lr_folder)


def _pairs(hr_files: list[Path], scale: int, lr_folder: str | os.PathLike | None) -> Iterator[BenchmarkPair]:
    for path in hr_files:
        hr = modcrop(_without_alpha(read_image(path)), scale)
        if lr_folder is None:
            lr = imresize(hr, 1 / scale)
        else:
            lr = _without_alpha(read_image(_find(Path(lr_folder), path.name)))
            expected = (hr.shape[0] // scale, hr.shape[1] // scale)
            if lr.shape[:2] != expected:
                raise InputError(
                    f"{path.name}: the LR image is {lr.shape[1]}x{lr.shape[0]}, expected {expected[1]}x{expected[0]}"
                )
        yield BenchmarkPair(path.name, hr, lr)
