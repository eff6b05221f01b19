"""Every released preset of an SR architecture against its official code: parameters and outputs.

    python benchmarks/sr_agreement.py --arch swinir --reference /path/to/JingyunLiang-SwinIR-checkout
    python benchmarks/sr_agreement.py --arch hat --reference /path/to/XPixelGroup-HAT-checkout --sizes 32 21

Prints a Markdown table: per released preset (gridattn's own, ``tiny`` and those with the image skip, left out)
and scale, the parameter counts of
the official model and of gridattn's, and the largest absolute difference of their float32 outputs (official
numerics, the same seeded weights, batch 1) at a square input whose side is a multiple of the window and at an
odd-sized one (``--sizes MULTIPLE ODD``; the odd input is ``ODD x (ODD + 8)``), which the official pipeline pads
(benchmarks/sr_speed.py's ``OFFICIAL_CODE``: SwinIR's forward, HAT's test wrapper; DAT pads inside), with the
largest output magnitude beside it. The window multiple is one of ``pad_multiple`` (DAT: the longer window side).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sr_speed import Bench  # noqa: E402

SCALES = (1, 2, 3, 4, 8)


def preset_scales(bench: Bench, preset: str) -> list[int]:
    scales = []
    for scale in SCALES:
        try:
            bench.registered.preset(preset, scale)
        except ValueError:
            continue
        scales.append(scale)
    return scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="swinir")
    parser.add_argument("--reference", required=True, help="local checkout of the architecture's official repository")
    parser.add_argument("--models", nargs="+", default=None, help="presets (default: every one but tiny)")
    parser.add_argument("--sizes", type=int, nargs=2, default=(32, 21), metavar=("MULTIPLE", "ODD"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="torch.meshgrid")
    probe = Bench(args.arch, 4, args.reference, args.threads)
    presets = args.models or [p for p, make in probe.registered.presets.items()
                              if p != "tiny" and not make(preset_scales(probe, p)[0]).image_skip]
    print(f"# {probe.registered.title} against {probe.code.repository}, float32, official numerics, "
          f"torch {torch.__version__}\n")
    print("| preset | scale | parameters official | parameters gridattn | max diff at window multiple | "
          "max diff at odd size | max output |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for preset in presets:
        for scale in preset_scales(probe, preset):
            bench = Bench(args.arch, scale, args.reference, args.threads)
            official, ours = bench.build("official", preset), bench.build("gridattn", preset)
            counts = [sum(p.numel() for p in m.parameters()) for m in (official, ours)]
            config = bench.config(preset)
            multiple = -(-args.sizes[0] // config.pad_multiple) * config.pad_multiple
            cells, peak = [], 0.0
            for h, w in ((multiple, multiple), (args.sizes[1], args.sizes[1] + 8)):
                x = torch.rand(1, config.in_channels, h, w, generator=torch.Generator().manual_seed(h * w))
                a, b = bench.forward(official, "official", x), bench.forward(ours, "gridattn", x)
                cells.append(f"{(a - b).abs().max().item():.1e} ({h}x{w})")
                peak = max(peak, a.abs().max().item())
            print(f"| {preset} | x{scale} | {counts[0]:,} | {counts[1]:,} | {' | '.join(cells)} | {peak:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
