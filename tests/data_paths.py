"""Where the shared benchmark images are: $GRIDATTN_DATA, or ../shared/data beside the repository.

Without them the tests that need them skip, except under CI (``CI`` set, as ``.ci/run`` runs): there the data
must be present, and a missing folder fails those tests instead of skipping them silently.
"""

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("GRIDATTN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def benchmark_data() -> Path:
    """The data folder; skips the test where it is missing, fails it under CI."""
    if not (DATA / "Set5" / "HR").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"benchmark images not found at {DATA} (CI needs them; set GRIDATTN_DATA)")
        pytest.skip(f"benchmark images not found at {DATA}")
    return DATA


needs_data = pytest.mark.usefixtures("benchmark_data")
