"""Collection of the docstring examples (``--doctest-modules`` over ``gridattn/``)."""

import importlib.util

# gridattn.integrations.spandrel imports spandrel, which imports a torchvision that must match torch: its
# examples and tests run in .ci/torchvision's venv.
collect_ignore = []
try:
    if importlib.util.find_spec("spandrel") is None:
        raise ImportError
    import spandrel  # noqa: F401
except Exception:  # not installed, or its torchvision does not fit this torch
    collect_ignore.append("gridattn/integrations/spandrel.py")
