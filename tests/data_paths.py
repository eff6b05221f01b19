"""Where the shared benchmark images are: $GRIDATTN_DATA, or ../shared/data beside the repository."""

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("GRIDATTN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "Set5" / "HR").is_dir(), reason=f"benchmark images not found at {DATA}")
