"""Training pairs made on the fly: random HR crops, LR by MATLAB bicubic, flips and 90-degree rotations."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.images import list_images, read_image
from ..data.imresize import imresize


def augment(images: Sequence[np.ndarray], hflip: bool, vflip: bool, transpose: bool) -> list[np.ndarray]:
    """The same flips / transpose (together: the 8 symmetries of the square) applied to each ``(H, W, C)``.

    Args:
        images: ``(H, W, C)`` arrays, e.g. an LR patch and its HR patch.
        hflip: mirror left-right.
        vflip: mirror top-bottom.
        transpose: swap height and width (after the flips).

    Returns:
        Contiguous copies, in the order of ``images``.
    """
    out = []
    for image in images:
        if hflip:
            image = image[:, ::-1]
        if vflip:
            image = image[::-1]
        if transpose:
            image = image.transpose(1, 0, 2)
        out.append(np.ascontiguousarray(image))
    return out


class PairedDataset(Dataset):
    """Random ``(LR, HR)`` training pairs from folders of HR images.

    Each item picks an image, a random LR-aligned crop of ``patch_size * scale`` HR pixels, makes its LR
    patch with MATLAB bicubic (uint8, as benchmark LR images are made) from the crop plus a margin of
    ``4 * scale`` pixels, so the LR patch equals the same crop of the whole image's MATLAB LR, and applies a
    random flip / rotation to both. With ``lr_folders`` the LR images are read (matched by relative path)
    instead of made. Item ``i`` depends only on ``(seed, i)``: a trainer reading indices ``step * batch + j``
    gets the same data after a resume, in any number of workers or processes.

    Args:
        folders: HR image folders (searched recursively).
        scale: 2, 3 or 4.
        patch_size: LR patch size; must be a multiple of ``size_multiple`` (the model's window / interval).
        size_multiple: the model's padding multiple (``HMANetConfig.pad_multiple``).
        augment: random flips and 90-degree rotations.
        length: number of items (a trainer uses ``steps * batch``); default: the number of images.
        lr_folders: optional pre-made LR folders, one per HR folder.
        cache_images: decoded images kept in memory per worker (least recently used dropped); small training
            sets then decode each image once.
        seed: the seed that, with the index, fixes each item.

    Items: ``(lr, hr)`` float32 tensors ``(3, patch, patch)`` and ``(3, patch*scale, patch*scale)`` in ``[0, 1]``.

    Raises:
        ValueError: ``patch_size`` not a positive multiple of ``size_multiple``, no images, a number of
            ``lr_folders`` other than of ``folders``; when an item is read, an image too small for the patch.
        FileNotFoundError: a folder, or an LR image matching an HR image, is missing.

    Examples:
        >>> from gridattn.train import PairedDataset
        >>> data = PairedDataset(["photos/"], scale=4, patch_size=48, size_multiple=16, length=1000)  # doctest: +SKIP
        >>> lr, hr = data[0]                                                                          # doctest: +SKIP
        >>> lr.shape, hr.shape                                                                        # doctest: +SKIP
        (torch.Size([3, 48, 48]), torch.Size([3, 192, 192]))
    """

    def __init__(
        self,
        folders: Sequence[str | os.PathLike],
        scale: int,
        patch_size: int = 64,
        size_multiple: int = 1,
        augment: bool = True,
        length: int | None = None,
        lr_folders: Sequence[str | os.PathLike] | None = None,
        seed: int = 0,
        cache_images: int = 64,
    ) -> None:
        if patch_size < 1 or patch_size % size_multiple:
            raise ValueError(
                f"LR patch size {patch_size} must be a positive multiple of {size_multiple} (the model's window and "
                f"interval); for example the official x3 fine-tune's HR patch 128 gives LR 42, which cannot run"
            )
        self.files = list_images(*folders, recursive=True)
        self.lr_files = None
        if lr_folders is not None:
            if len(lr_folders) != len(folders):
                raise ValueError("give one LR folder per HR folder")
            self.lr_files = [self._lr_path(f, folders, lr_folders) for f in self.files]
        self.scale, self.patch_size, self.augment, self.seed = scale, patch_size, augment, seed
        self.length = len(self.files) if length is None else length
        self.cache_images = cache_images
        self._decoded: OrderedDict[Path, np.ndarray] = OrderedDict()

    def _read_rgb(self, path: Path) -> np.ndarray:
        image = self._decoded.get(path)
        if image is None:
            image = read_image(path)
            image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
            if self.cache_images:
                self._decoded[path] = image
                while len(self._decoded) > self.cache_images:
                    self._decoded.popitem(last=False)
        else:
            self._decoded.move_to_end(path)
        return image

    @staticmethod
    def _lr_path(hr_file, folders, lr_folders):
        for hr_root, lr_root in zip(folders, lr_folders):
            try:
                relative = Path(hr_file).relative_to(hr_root)
            except ValueError:
                continue
            for candidate in sorted((Path(lr_root) / relative.parent).glob(relative.stem + ".*")):
                return candidate
            raise FileNotFoundError(f"no LR image for {hr_file} in {lr_root}")
        raise FileNotFoundError(f"{hr_file} is in none of the HR folders")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # everything random about item `index` comes from (seed, index): the same in any worker, process or
        # resumed run, so a trainer only has to know which indices it has consumed
        rng = np.random.default_rng([self.seed, index])
        pick = int(rng.integers(len(self.files)))
        hr_image = self._read_rgb(self.files[pick])
        s, p = self.scale, self.patch_size
        lr_image = None if self.lr_files is None else self._read_rgb(self.lr_files[pick])
        lr_h, lr_w = hr_image.shape[0] // s, hr_image.shape[1] // s
        if min(lr_h, lr_w) < p:
            raise ValueError(
                f"{self.files[pick]} is {hr_image.shape[1]}x{hr_image.shape[0]}: "
                f"too small for LR patches of {p} at x{s}"
            )
        top, left = int(rng.integers(lr_h - p + 1)), int(rng.integers(lr_w - p + 1))
        hr = hr_image[top * s:(top + p) * s, left * s:(left + p) * s]
        if lr_image is not None:
            lr = lr_image[top:top + p, left:left + p]
        else:
            lr = self._make_lr(hr_image[: lr_h * s, : lr_w * s], top, left)
        if self.augment:
            hr, lr = augment([hr, lr], *(bool(b) for b in rng.integers(0, 2, 3)))
        to_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255.0  # noqa: E731
        return to_tensor(lr), to_tensor(hr)

    def _make_lr(self, hr_image: np.ndarray, top: int, left: int) -> np.ndarray:
        """LR crop ``[top, top + p) x [left, left + p)`` of ``imresize(hr_image, 1/s)``, computed from a margin."""
        s, p = self.scale, self.patch_size
        margin = 4  # LR pixels; the antialiased kernel reaches about 2 LR pixels (2 * scale HR pixels)
        lr_h, lr_w = hr_image.shape[0] // s, hr_image.shape[1] // s
        t0, l0 = max(0, top - margin), max(0, left - margin)
        t1, l1 = min(lr_h, top + p + margin), min(lr_w, left + p + margin)
        region = imresize(hr_image[t0 * s:t1 * s, l0 * s:l1 * s], 1 / s)
        return region[top - t0:top - t0 + p, left - l0:left - l0 + p]
