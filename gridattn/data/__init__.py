"""Data: MATLAB-exact resizing, image files and benchmark folders."""

from .benchmark import BenchmarkPair, benchmark_pairs
from .images import IMAGE_SUFFIXES, list_images, modcrop, pil_pixels, read_image, write_image
from .imresize import imresize

__all__ = [
    "IMAGE_SUFFIXES",
    "BenchmarkPair",
    "benchmark_pairs",
    "imresize",
    "list_images",
    "modcrop",
    "pil_pixels",
    "read_image",
    "write_image",
]
