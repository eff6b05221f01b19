"""HAT inference speed and peak memory on the CPU: gridattn against the official implementation.

    python benchmarks/hat_speed.py --reference /path/to/XPixelGroup-HAT-checkout
    python benchmarks/hat_speed.py --reference HAT --models hat_s hat --sizes 64 128 --repeats 7 --threads 2

Prints a Markdown table: per model (HAT-S x4, HAT x4 by default) and LR size, the median float32 forward time of
each variant with its spread (min-max over the repeats), the official model's median over each variant's
(above 1: faster than the official code), the peak memory of one forward and the largest difference from the
official output.

Speed: one process; every variant gets the same weights (gridattn's model, seed 0, biases perturbed; the
official model loads them through ``to_layout``), one warm-up forward per size, then ``--repeats`` rounds in
which every variant runs once, in an order that alternates between rounds, so that a noisy machine affects them
alike. ``torch.set_num_threads(--threads)``, batch 1, ``torch.inference_mode``.

Memory: each (variant, model, size) in a fresh process, so that no other model's allocations or allocator state
are in it: the model is built (random weights: memory does not depend on their values), one warm-up forward
runs, the kernel's peak-resident-set counter is reset (``echo 5 > /proc/self/clear_refs``) and one more forward
runs; ``VmHWM`` from ``/proc/self/status`` is then the exact peak resident set of that forward (kernel-counted,
not sampled). Reported: that peak minus the resident set right after building the model (what the forward needs
beyond the weights: activations, masks, gridattn's cached position biases) and the peak itself (weights and the
Python/torch runtime included). PyTorch's CPU allocator does not cache; the probes run with glibc's mmap and trim
thresholds fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), so that every tensor
buffer is returned to the system when freed and the resident set follows the live tensors (with glibc's default,
dynamic thresholds the same probe varies by +-100 MiB from run to run; with these, by < 1 MiB).

Variants: ``official`` (needs ``--reference``); ``gridattn`` (official numerics: the same outputs, position
biases cached per size as ``gridattn.inference.upscale`` runs it); ``nocache`` (the same without the bias cache);
``corrected`` (corrected numerics, bias cache on).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from gridattn.layers import set_bias_cache
from gridattn.models import HAT, hat_config
from gridattn.models.hat_layout import OFFICIAL
from gridattn.models.layout import to_layout

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # official_reference: the official code with its imports stubbed
VARIANTS = ("official", "gridattn", "nocache", "corrected")
MALLOC_THRESHOLD = 128 * 1024
TITLES = {"hat": "HAT", "hat_s": "HAT-S", "hat_l": "HAT-L", "tiny": "tiny"}


def _official_arch(reference: str):
    from official_reference import load_hat_arch

    warnings.filterwarnings("ignore", message="torch.meshgrid")
    return load_hat_arch(reference)


def build(variant: str, preset: str, scale: int, reference: str | None, same_weights: bool = True):
    """The model of ``variant`` (eval). ``same_weights``: gridattn's seeded weights for every variant (the
    official model loads them); otherwise each model keeps its own initialisation (the memory probe)."""
    config = hat_config(scale, preset, numerics="official")
    if variant == "official":
        from official_reference import official_hat

        model = official_hat(_official_arch(reference), config)
        if same_weights:
            model.load_state_dict(to_layout(shared_weights(config), OFFICIAL), strict=True)
        return model.eval()
    if variant == "corrected":
        config = config.replace(numerics="corrected")
    model = HAT(config).eval()
    if same_weights:
        model.load_state_dict(shared_weights(hat_config(scale, preset, numerics="official")).state_dict())
    return set_bias_cache(model, variant != "nocache")


def shared_weights(config) -> HAT:
    torch.manual_seed(0)
    model = HAT(config).eval()
    with torch.no_grad():  # the biases start at zero; make them count
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model


def forward(model: torch.nn.Module, variant: str, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        if variant == "official":
            from official_reference import official_hat_forward

            return official_hat_forward(model, x)
        return model(x)


# ------------------------------------------------------------------------------------------------------------
# memory: one forward in a fresh process


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    variant, preset, size = args.memory_probe
    if variant == "official":
        _official_arch(args.reference)
    model = build(variant, preset, args.scale, args.reference, same_weights=False)
    gc.collect()
    built = _status_kib("VmRSS")
    x = torch.rand(1, 3, int(size), int(size))
    forward(model, variant, x)  # warm-up: lazy initialisation, gridattn's bias cache
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:  # reset VmHWM to the current resident set
        clear.write("5")
    forward(model, variant, x)
    peak = _status_kib("VmHWM")
    print(json.dumps({"built_mib": built / 1024, "peak_mib": peak / 1024}))


def measure_memory(variant: str, preset: str, size: int, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--memory-probe", variant, preset, str(size), "--scale", str(args.scale),
               "--threads", str(args.threads)]
    if args.reference:
        command += ["--reference", args.reference]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MALLOC_THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(MALLOC_THRESHOLD))
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------


def run_model(preset: str, args: argparse.Namespace, variants: list[str]) -> list[str]:
    models = {v: build(v, preset, args.scale, args.reference) for v in variants}
    rows = []
    for size in args.sizes:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        outputs = {v: forward(models[v], v, x) for v in variants}  # warm-up
        times: dict[str, list[float]] = {v: [] for v in variants}
        for round_ in range(args.repeats):
            for v in variants if round_ % 2 == 0 else variants[::-1]:
                start = time.perf_counter()
                forward(models[v], v, x)
                times[v].append(time.perf_counter() - start)
        base = statistics.median(times[variants[0]])
        memory = {v: measure_memory(v, preset, size, args) for v in variants} if not args.no_memory else {}
        for v in variants:
            median = statistics.median(times[v])
            diff = (outputs[v] - outputs[variants[0]]).abs().max().item()
            cells = [f"{TITLES[preset]} x{args.scale}", str(size), v, f"{median:.3f}",
                     f"{min(times[v]):.3f}-{max(times[v]):.3f}", f"{base / median:.2f}x"]
            if memory:
                m = memory[v]
                cells += [f"{m['peak_mib'] - m['built_mib']:.0f}", f"{m['peak_mib']:.0f}"]
            cells.append(f"{diff:.1e}")
            rows.append("| " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="local checkout of XPixelGroup/HAT")
    parser.add_argument("--models", nargs="+", choices=sorted(TITLES), default=["hat_s", "hat"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                        help="default: official (with --reference), gridattn, nocache")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--memory-probe", nargs=3, metavar=("VARIANT", "MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(args)
    variants = args.variants or (["official"] if args.reference else []) + ["gridattn", "nocache"]
    if "official" in variants and not args.reference:
        parser.error("variant 'official' needs --reference PATH (a checkout of XPixelGroup/HAT)")
    torch.set_num_threads(args.threads)
    print(f"# HAT forward, float32, batch 1, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.repeats} interleaved repeats\n")
    header = ["model", "LR", "variant", "median s", "spread s", f"speed vs {variants[0]}"]
    if not args.no_memory:
        header += ["forward peak MiB", "process peak MiB"]
    header.append(f"max diff vs {variants[0]}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    for preset in args.models:
        run_model(preset, args, variants)


if __name__ == "__main__":
    main()
