"""Run the official implementations on the cases of tests/official_cases*.py and store their outputs.

Usage:
    python tools/make_official_fixtures.py /path/to/korouuuuu/HMA-checkout          # tests/fixtures/official_outputs.pt
    python tools/make_official_fixtures.py --swinir /path/to/JingyunLiang/SwinIR-checkout
                                                                      # tests/fixtures/official_swinir_outputs.pt
    python tools/make_official_fixtures.py --hat /path/to/XPixelGroup/HAT-checkout  # official_hat_outputs.pt
    python tools/make_official_fixtures.py --dat /path/to/zhengchen1999/DAT-checkout  # official_dat_outputs.pt

The official code is never vendored; the few names it imports from BasicSR / timm are stubbed
(``tools/official_reference.py``). Inputs whose size is not a multiple of the window go through each official
pipeline's padding: HMA's test code mirrors (``cat([x, flip(x)])`` then crop), SwinIR's forward pads by
reflection itself, HAT's test pipeline (``hat/models/hat_model.py``) pads by reflection; outputs are cropped
back; DAT's forward takes any size (it zero-pads inside its attention). The HAT and DAT files also hold the
official parameter count of every gridattn preset of theirs at x2/x3/x4 and the checkout's commit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]
import official_reference as ref  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


def run_cases(cases: ModuleType, build: Callable, forward: Callable) -> dict[str, torch.Tensor]:
    """The official output of every case of ``cases`` (an ``official_cases*`` module): ``build(config)`` makes the
    official model, which loads the case's weights strictly; ``forward(model, x, config)`` runs its pipeline."""
    outputs = {}
    for name in cases.CASES:
        c = cases.config_of(name)
        model = build(c)
        model.load_state_dict(cases.official_state(name), strict=True)
        x = cases.input_of(name)
        with torch.no_grad():
            out = forward(model, x, c)
        assert out.shape[-2:] == (x.shape[-2] * c.scale, x.shape[-1] * c.scale), out.shape
        outputs[name] = out.contiguous()
        print(f"{name}: output {tuple(out.shape)}, range [{out.min():.3f}, {out.max():.3f}]")
    return outputs


def parameter_counts(arch: str, build: Callable) -> dict[str, int]:
    """The official model's parameter count (``build(config)``) for every gridattn preset of ``arch`` at x2, x3
    and x4."""
    from gridattn.models import get_architecture

    architecture = get_architecture(arch)
    return {f"{preset}_x{scale}": sum(p.numel() for p in build(architecture.preset(preset, scale)).parameters())
            for preset in architecture.presets for scale in (2, 3, 4)}


def check_dat_buffers(arch: ModuleType, cases: ModuleType) -> None:
    """The cases' weights carry gridattn's buffers (offsets, index, masks) into the official model; they must be
    the ones the official code builds itself, or the fixture would test gridattn against itself."""
    for name in cases.CASES:
        built = ref.official_dat(arch, cases.config_of(name)).state_dict()
        ours = cases.official_state(name)
        for key, value in built.items():
            if not key.endswith(("rpe_biases", "relative_position_index", "attn_mask_0", "attn_mask_1")):
                continue
            if not torch.equal(ours[key].to(value.dtype), value):
                raise SystemExit(f"{name}: gridattn's {key} differs from the official code's")
        missing = {k for k in built if k.endswith(("rpe_biases", "attn_mask_0", "attn_mask_1"))} - set(ours)
        if missing:
            raise SystemExit(f"{name}: gridattn's layout lacks {sorted(missing)[:3]}")
    print("buffers: gridattn's equal the official code's")


def commit_of(checkout: str) -> str:
    try:
        return subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save(content, fixture: str) -> None:
    path = FIXTURES / fixture
    torch.save(content, path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hma", nargs="?", help="checkout of korouuuuu/HMA (HMANet fixtures)")
    parser.add_argument("--swinir", metavar="CHECKOUT", help="checkout of JingyunLiang/SwinIR (SwinIR fixtures)")
    parser.add_argument("--hat", metavar="CHECKOUT", help="checkout of XPixelGroup/HAT (HAT fixtures)")
    parser.add_argument("--dat", metavar="CHECKOUT", help="checkout of zhengchen1999/DAT (DAT fixtures)")
    args = parser.parse_args()
    if not (args.hma or args.swinir or args.hat or args.dat):
        parser.error("give an HMA checkout, --swinir CHECKOUT, --hat CHECKOUT and/or --dat CHECKOUT")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    warnings.filterwarnings("ignore", message="torch.meshgrid")  # the official index code
    if args.hma:
        import official_cases

        arch = ref.load_official_arch(args.hma)
        save(run_cases(official_cases, lambda c: ref.official_model(arch, c),
                       lambda m, x, c: ref.official_hma_forward(m, x)), official_cases.FIXTURE)
    if args.swinir:
        import official_cases_swinir

        arch = ref.load_swinir_arch(args.swinir)
        save(run_cases(official_cases_swinir, lambda c: ref.official_swinir(arch, c), lambda m, x, c: m(x)),
             official_cases_swinir.FIXTURE)
    if args.hat:
        import official_cases_hat

        arch = ref.load_hat_arch(args.hat)
        outputs = run_cases(official_cases_hat, lambda c: ref.official_hat(arch, c),
                            lambda m, x, c: ref.official_hat_forward(m, x))
        counts = parameter_counts("hat", lambda c: ref.official_hat(arch, c))
        for key, count in counts.items():
            print(f"{key}: {count:,} parameters")
        save({"outputs": outputs, "parameter_counts": counts, "source": commit_of(args.hat)},
             official_cases_hat.FIXTURE)
    if args.dat:
        import official_cases_dat

        arch = ref.load_dat_arch(args.dat)
        check_dat_buffers(arch, official_cases_dat)
        outputs = run_cases(official_cases_dat, lambda c: ref.official_dat(arch, c), lambda m, x, c: m(x))
        counts = parameter_counts("dat", lambda c: ref.official_dat(arch, c))
        for key, count in counts.items():
            print(f"{key}: {count:,} parameters")
        save({"outputs": outputs, "parameter_counts": counts, "source": commit_of(args.dat)},
             official_cases_dat.FIXTURE)


if __name__ == "__main__":
    main()
