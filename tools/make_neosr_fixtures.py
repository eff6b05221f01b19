"""Run neosr's HMA (``neosr/archs/hma_arch.py``) on seeded cases and store its outputs and parameter counts.

Usage: python tools/make_neosr_fixtures.py /path/to/neosr-project/neosr-checkout
Writes tests/fixtures/neosr_hma_outputs.pt: per case the output of neosr's model for the weights of
``tests/neosr_cases.py`` (made in the official layout from seeds, so only outputs are stored), and the parameter
counts of neosr's ``hma``, ``hma_medium`` and ``hma_large`` at x2, x3, x4. neosr's forward does not pad: the
cases' sizes are multiples of the window and the grid interval.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]
from neosr_cases import CASES, FIXTURE, input_of, neosr_state  # noqa: E402
from official_reference import load_neosr_hma_arch  # noqa: E402


def main(checkout: str) -> None:
    arch = load_neosr_hma_arch(checkout)
    outputs = {}
    for name, case in CASES.items():
        c = case["config"]
        model = arch.hma(upscale=c["scale"], embed_dim=c["embed_dim"], depths=c["depths"], num_heads=c["num_heads"],
                         window_size=c["window_size"], drop_path_rate=0.0).eval()
        model.load_state_dict(neosr_state(name), strict=True)
        with torch.no_grad():
            outputs[name] = model(input_of(name)).contiguous()
        print(f"{name}: output {tuple(outputs[name].shape)}")
    counts = {}
    for preset in ("hma", "hma_medium", "hma_large"):
        for scale in (2, 3, 4):
            build = arch.hma if preset == "hma" else getattr(arch, preset)
            counts[preset, scale] = sum(p.numel() for p in build(upscale=scale).parameters())
            print(f"{preset} x{scale}: {counts[preset, scale]:,} parameters")
    torch.save({"outputs": outputs, "parameters": counts}, ROOT / "tests" / "fixtures" / FIXTURE)


if __name__ == "__main__":
    main(sys.argv[1])
