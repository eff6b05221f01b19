"""Run the official HMANet implementation on the cases of tests/official_cases.py and store its outputs.

Usage: python tools/make_official_fixtures.py /path/to/korouuuuu/HMA-checkout
The official code is never vendored; it needs only three names from BasicSR, which are stubbed here.
Inputs whose size is not a multiple of the window are padded the way the official test code does
(``cat([x, flip(x)])`` then crop) and the output is cropped back.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]
from official_cases import CASES, FIXTURE, config_of, input_of, official_state  # noqa: E402
from official_reference import load_official_arch, official_model  # noqa: E402


def main(checkout: str) -> None:
    hma_arch = load_official_arch(checkout)
    outputs = {}
    for name in CASES:
        c = config_of(name)
        model = official_model(hma_arch, c)
        model.load_state_dict(official_state(name), strict=True)
        x = input_of(name)
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % c.window_size, (-w) % c.window_size
        x = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :h + pad_h]
        x = torch.cat([x, torch.flip(x, [3])], 3)[:, :, :, :w + pad_w]
        with torch.no_grad():
            out = model(x)[:, :, :h * c.scale, :w * c.scale]
        outputs[name] = out.contiguous()
        print(f"{name}: output {tuple(out.shape)}, range [{out.min():.3f}, {out.max():.3f}]")
    torch.save(outputs, ROOT / "tests" / "fixtures" / FIXTURE)


if __name__ == "__main__":
    main(sys.argv[1])
