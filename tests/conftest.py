"""Shared test settings.

Hypothesis profiles (choose with HYPOTHESIS_PROFILE=...):
  ci (default): 10 examples per property, derandomized so CI runs are reproducible;
  dev: 60 random examples; thorough: 1000 random examples (tools/thorough.sh).
Wide input spaces ask for at least a few tens of examples even under ci (``strategies.at_least``).
"""

import os

import pytest
import torch
from data_paths import benchmark_data  # noqa: F401  (the fixture behind data_paths.needs_data)
from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=10, derandomize=True, **_common)
settings.register_profile("dev", max_examples=60, **_common)
settings.register_profile("thorough", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))



torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
