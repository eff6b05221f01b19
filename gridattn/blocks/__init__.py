"""The SR transformers' blocks (HMANet, SwinIR, HAT, DAT), built from the drop-in layers: ``(B, H, W, C)`` in and
out."""

from .datb import DATB, DATGroup
from .fab import FAB
from .gab import GAB
from .hab import HAB, OCAB, RHAG
from .rhtb import RHTB
from .rstb import RSTB

__all__ = ["DATB", "DATGroup", "FAB", "GAB", "HAB", "OCAB", "RHAG", "RHTB", "RSTB"]
