"""Collection of the docstring examples (``--doctest-modules`` over ``gridattn/`` and ``tests/``)."""

import importlib.util

# These files import a library that imports a torchvision matching torch (spandrel, timm): their examples and
# tests run in .ci/torchvision's venv, and are not collected where the library does not import.
NEEDS = {"spandrel": ["gridattn/integrations/spandrel.py"], "timm": ["tests/timm_reference.py"]}

collect_ignore = []
for library, files in NEEDS.items():
    try:
        if importlib.util.find_spec(library) is None:
            raise ImportError
        importlib.import_module(library)
    except Exception:  # not installed, or its torchvision does not fit this torch
        collect_ignore.extend(files)
