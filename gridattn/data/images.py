"""Image files and folders: reading, writing, listing, mod-cropping."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .._errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File name suffixes (lower case) recognised as images when listing folders."""


def list_images(*paths: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files given directly or found in the given folders, sorted by path per folder.

    Args:
        *paths: image files (taken as they are, whatever their suffix) and folders (their files with a suffix
            in :data:`IMAGE_SUFFIXES`).
        recursive: also search sub-folders (training data: ImageNet-style class folders and flat DF2K-style
            folders both work).

    Returns:
        The files, in the order of ``paths``.

    Raises:
        FileNotFoundError: a path does not exist.
        InputError: no paths, or a folder without images (an input that would be ignored silently).
    """
    if not paths:
        raise InputError("no image files or folders given")
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            images = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
            files += images
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return files


def pil_pixels(image) -> np.ndarray:
    """A PIL image's pixels as a ``uint8`` array: ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.

    Palette images become RGB (RGBA when they have a transparent colour), bilevel images grayscale, CMYK and
    other colour spaces RGB (RGBA with an alpha band); 16-bit grayscale is rounded to 8 bits.

    Raises:
        ValueError: floating-point or 32-bit integer pixels.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit grayscale: round to 8 bits
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise InputError(f"32-bit integer pixel values (range {values.min()}..{values.max()}) are not supported")
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    if image.mode == "F":
        raise InputError("floating-point image files are not supported; convert to 8 or 16 bits")
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return np.asarray(image).copy()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``uint8``: ``(H, W)`` for grayscale, ``(H, W, 3)`` for colour, ``(H, W, 4)`` with alpha.

    Palette images become RGB (RGBA when they have a transparent colour), bilevel images grayscale, CMYK and
    other colour spaces RGB. 16-bit grayscale is rounded to 8 bits (``round(v * 255 / 65535)``); PIL reads
    16-bit colour PNGs as 8-bit. An EXIF orientation is applied.

    Raises:
        ValueError: the file cannot be decoded as an image, is larger than PIL's decompression-bomb limit
            (``PIL.Image.MAX_IMAGE_PIXELS``), or holds floating-point or 32-bit integer pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # refuse at PIL's limit, not only at twice it
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return pil_pixels(ImageOps.exif_transpose(image))  # pixels as a viewer shows them
    except (
        Image.DecompressionBombError, Image.DecompressionBombWarning, UnidentifiedImageError,
        OSError, SyntaxError, EOFError, ValueError,
    ) as error:
        raise InputError(f"cannot read image {path}: {error}") from None


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a ``uint8`` ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` array (PNG for a .png path).

    Args:
        path: the file; its suffix picks the format. Missing parent folders are created.
        image: the pixels, as :func:`read_image` returns them.
    """
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``(H, W, ...)`` at the bottom/right to multiples of ``scale`` (the benchmark protocol).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.
        scale: the upscaling factor.

    Returns:
        A view ``(H - H % scale, W - W % scale, ...)``.

    Examples:
        >>> import numpy as np
        >>> from gridattn.data import modcrop
        >>> modcrop(np.zeros((255, 256, 3), np.uint8), 4).shape
        (252, 256, 3)
    """
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]
