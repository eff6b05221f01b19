"""The bfloat16 decision: measured matrix-product rates, the threshold, the cache, and what gridattn info says."""

import pytest
import torch

import gridattn.functional.precision as precision
from gridattn.functional import BFLOAT16_MIN_SPEEDUP, bfloat16_pays, clear_caches, measure_matmul_rates
from gridattn.info import collect_info, format_info


@pytest.fixture
def fake_rates(monkeypatch):
    """Replace the timing with given rates (GFLOP/s per dtype); count the measurements."""
    calls = []

    def install(float32: float, bfloat16: float):
        rates = {torch.float32: float32, torch.bfloat16: bfloat16}
        def timed(device, dtype, size, seconds):
            calls.append(dtype)
            return rates[dtype]

        monkeypatch.setattr(precision, "_rate", timed)
        clear_caches()
        return calls

    yield install
    clear_caches()


@pytest.mark.parametrize("float32, bfloat16, pays", [
    (50.0, 160.0, True),    # a CPU with bfloat16 units (AVX512-BF16): 3x
    (144.0, 0.9, False),    # bfloat16 emulated: 160x slower
    (100.0, 100.0 * BFLOAT16_MIN_SPEEDUP, True),
    (100.0, 100.0 * BFLOAT16_MIN_SPEEDUP - 1, False),
])
def test_the_decision_follows_the_measurement_both_ways(fake_rates, float32, bfloat16, pays):
    calls = fake_rates(float32, bfloat16)
    assert bfloat16_pays("cpu") is pays
    assert measure_matmul_rates("cpu").speedup == pytest.approx(bfloat16 / float32)
    bfloat16_pays("cpu")
    assert len(calls) == 2  # measured once per process, then cached
    report = collect_info()
    assert report["devices"]["cpu"]["bfloat16_pays"] is pays
    assert report["devices"]["cpu"]["matmul_gflops"] == {"float32": round(float32, 1), "bfloat16": round(bfloat16, 1)}
    assert ("bfloat16 pays here" if pays else "bfloat16 does not pay here") in format_info(report)


def test_a_real_measurement_times_real_products():
    rates = measure_matmul_rates("cpu", size=128, seconds=0.01)
    assert rates.device == "cpu" and rates.float32 > 0.1 and rates.bfloat16 > 0.001
    assert measure_matmul_rates("cpu", size=128, seconds=0.01) is rates
    clear_caches()
    assert measure_matmul_rates("cpu", size=128, seconds=0.01) is not rates
