"""Run the official implementations on the cases of tests/official_cases*.py and store their outputs.

Usage:
    python tools/make_official_fixtures.py /path/to/korouuuuu/HMA-checkout          # tests/fixtures/official_outputs.pt
    python tools/make_official_fixtures.py --swinir /path/to/JingyunLiang/SwinIR-checkout
                                                                      # tests/fixtures/official_swinir_outputs.pt

The official code is never vendored; the few names it imports from BasicSR / timm are stubbed
(``tools/official_reference.py``). HMANet inputs whose size is not a multiple of the window are padded the way
the official HMA test code does (``cat([x, flip(x)])`` then crop) and the output is cropped back; SwinIR
inputs go to the official model as they are: its forward pads by reflection to the window and crops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]
from official_reference import load_official_arch, load_swinir_arch, official_model, official_swinir  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


def main(checkout: str) -> None:
    """HMANet: the cases of tests/official_cases.py."""
    from official_cases import CASES, FIXTURE, config_of, input_of, official_state

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
    torch.save(outputs, FIXTURES / FIXTURE)


def main_swinir(checkout: str) -> None:
    """SwinIR: the cases of tests/official_cases_swinir.py, through the official forward (reflection padding
    inside it)."""
    from official_cases_swinir import CASES, FIXTURE, config_of, input_of, official_state

    arch = load_swinir_arch(checkout)
    outputs = {}
    for name in CASES:
        c = config_of(name)
        model = official_swinir(arch, c)
        model.load_state_dict(official_state(name), strict=True)
        x = input_of(name)
        with torch.no_grad():
            out = model(x)
        assert out.shape[-2:] == (x.shape[-2] * c.scale, x.shape[-1] * c.scale), out.shape
        outputs[name] = out.contiguous()
        print(f"{name}: output {tuple(out.shape)}, range [{out.min():.3f}, {out.max():.3f}]")
    path = FIXTURES / FIXTURE
    torch.save(outputs, path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hma", nargs="?", help="checkout of korouuuuu/HMA (HMANet fixtures)")
    parser.add_argument("--swinir", metavar="CHECKOUT", help="checkout of JingyunLiang/SwinIR (SwinIR fixtures)")
    args = parser.parse_args()
    if not args.hma and not args.swinir:
        parser.error("give an HMA checkout and/or --swinir CHECKOUT")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.hma:
        main(args.hma)
    if args.swinir:
        main_swinir(args.swinir)
