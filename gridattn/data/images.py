"""Image files and folders: reading, writing, listing, mod-cropping."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(*paths: str | os.PathLike) -> list[Path]:
    """Image files given directly or found (non-recursively) in the given folders, sorted by name per folder.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: no image was found.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return files


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``uint8``: ``(H, W)`` for grayscale, ``(H, W, 3)`` for colour, ``(H, W, 4)`` with alpha.

    Raises:
        ValueError: the file cannot be decoded as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return np.asarray(image).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a ``uint8`` ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` array (PNG for a .png path)."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``(H, W, ...)`` at the bottom/right to multiples of ``scale`` (the benchmark protocol)."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]
