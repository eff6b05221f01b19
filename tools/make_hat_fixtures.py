"""Run the official HAT on the cases of tests/official_cases_hat.py and store its outputs and parameter counts.

Usage:
    python tools/make_hat_fixtures.py /path/to/XPixelGroup/HAT-checkout    # tests/fixtures/official_hat_outputs.pt

The official code is never vendored; the few names ``hat/archs/hat_arch.py`` imports from BasicSR are stubbed
(``tools/official_reference.py``). Inputs go through HAT's test pipeline (``hat/models/hat_model.py``): reflection
padding at the bottom/right to a multiple of the window, the model, the output cropped back.

The file holds ``outputs`` (case name -> official output, float32), ``parameter_counts`` (``"<preset>_x<scale>"``
-> the official model's number of parameters, for every gridattn preset at x2/x3/x4) and ``source`` (the
checkout's commit when it is a git repository).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]
from official_cases_hat import CASES, FIXTURE, config_of, input_of, official_state  # noqa: E402
from official_reference import load_hat_arch, official_hat, official_hat_forward  # noqa: E402

from gridattn.models import hat_config  # noqa: E402
from gridattn.models.hat import PRESETS  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


def official_parameter_counts(arch) -> dict[str, int]:
    """The official model's parameter count for every gridattn HAT preset at x2, x3 and x4."""
    counts = {}
    for preset in PRESETS:
        for scale in (2, 3, 4):
            model = official_hat(arch, hat_config(scale, preset))
            counts[f"{preset}_x{scale}"] = sum(p.numel() for p in model.parameters())
    return counts


def commit_of(checkout: str) -> str:
    try:
        return subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(checkout: str) -> None:
    warnings.filterwarnings("ignore", message="torch.meshgrid")  # the official index code
    arch = load_hat_arch(checkout)
    outputs = {}
    for name in CASES:
        c = config_of(name)
        model = official_hat(arch, c)
        model.load_state_dict(official_state(name), strict=True)
        x = input_of(name)
        with torch.no_grad():
            out = official_hat_forward(model, x)
        assert out.shape[-2:] == (x.shape[-2] * c.scale, x.shape[-1] * c.scale), out.shape
        outputs[name] = out.contiguous()
        print(f"{name}: output {tuple(out.shape)}, range [{out.min():.3f}, {out.max():.3f}]")
    counts = official_parameter_counts(arch)
    for key, count in counts.items():
        print(f"{key}: {count:,} parameters")
    path = FIXTURES / FIXTURE
    torch.save({"outputs": outputs, "parameter_counts": counts, "source": commit_of(checkout)}, path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="checkout of XPixelGroup/HAT")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    main(args.checkout)
