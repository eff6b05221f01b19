"""HMANet's blocks, built from the drop-in layers: ``(B, H, W, C)`` in and out."""

from .fab import FAB
from .gab import GAB
from .rhtb import RHTB
from .rstb import RSTB

__all__ = ["FAB", "GAB", "RHTB", "RSTB"]
