"""Data: MATLAB-exact resizing, image files and benchmark folders."""

from .images import IMAGE_SUFFIXES, list_images, modcrop, read_image, write_image
from .imresize import imresize

__all__ = ["IMAGE_SUFFIXES", "imresize", "list_images", "modcrop", "read_image", "write_image"]
