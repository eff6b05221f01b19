"""SR transformer inference speed and peak memory on the CPU: gridattn against the official implementation.

    python benchmarks/sr_speed.py --reference /path/to/JingyunLiang-SwinIR-checkout
    python benchmarks/sr_speed.py --reference SwinIR --models classical lightweight --sizes 64 128 --repeats 5
    python benchmarks/sr_speed.py --arch hat --reference /path/to/XPixelGroup-HAT-checkout --models hat_s hat
    python benchmarks/sr_speed.py --arch dat --reference /path/to/zhengchen1999-DAT-checkout --models dat_light dat

Prints a Markdown table: per model (a preset of ``--arch`` at ``--scale``) and LR size, the median float32
forward time of each variant with its spread (min-max over the repeats), the first variant's median over the
variant's (official first by default: above 1 is faster than the official code), the FLOPs of one forward
(``torch.utils.flop_counter`` on the first variant; gridattn's SDPA kernel on the CPU has no FLOP formula), the
achieved GFLOP/s and its fraction of the float32 matrix-product peak measured in the same run, the peak memory
of one forward and the largest difference from the first variant's output.

Speed: one process; every variant gets the same weights (gridattn's model, seed 0, biases perturbed; the
official model loads them through the architecture's official layout), one warm-up forward per size, then
``--repeats`` rounds in which every variant runs once, in an order that alternates between rounds, so that a
noisy machine affects them alike. ``torch.set_num_threads(--threads)``, batch 1, ``torch.inference_mode``.

Memory: each (variant, model, size) in a fresh process, so that no other model's allocations are in it: the model
is built, one warm-up forward runs, the heap's free memory is given back (glibc ``malloc_trim``), the kernel's
peak-resident-set counter is reset (``/proc/self/clear_refs``) and one more forward runs; ``VmHWM`` is then the
peak resident set of that forward, counted by the kernel, not sampled. The probes run with glibc's mmap and trim
thresholds fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), so that freed tensor buffers
go back to the system and the resident set follows the live tensors; with glibc's dynamic defaults the same probe
moves by +-100 MiB from run to run. Reported, in MiB: ``forward``, that peak minus the resident set just before it
(the transient memory of one forward: activations, attention scores, biases); ``held``, the resident set after the
warm-up and the trim minus that after building the model (what stays: gridattn's cached masks and position biases,
kernels and libraries loaded on first use); ``malloc kept``, what the warm-up freed but malloc had not given back
before the trim (a long-running process holds it); and the process's peak resident set itself.

Variants: ``official`` (needs ``--reference``: the official code, its own padding); ``gridattn`` (official
numerics: the same outputs; as ``gridattn.inference.upscale`` runs one image in one pass, without the bias cache);
``cached`` (the same with the position biases cached per size, as ``upscale`` runs tiles and self-ensembles: the
biases are not recomputed, and are held between calls); ``corrected`` (corrected numerics, no cache);
``bfloat16`` (``gridattn`` under ``torch.autocast("cpu", torch.bfloat16)``, as ``upscale(dtype="bfloat16")`` runs it;
its max diff is bfloat16's error).

Architectures: one entry of ``OFFICIAL_CODE`` each (how to import and call the official code); gridattn's side
comes from the model registry (presets, official layout). SwinIR and HAT are there; another architecture is
one more entry.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from gridattn.layers import set_bias_cache
from gridattn.models import build_model, get_architecture
from gridattn.models.layout import to_layout

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "benchmarks")]  # official_reference; the other benchmarks
from hmanet_speed import matmul_peak  # noqa: E402

VARIANTS = ("official", "gridattn", "cached", "corrected", "bfloat16")


@dataclass(frozen=True)
class OfficialCode:
    """How to run one architecture's official code (tools/official_reference.py).

    Attributes:
        repository: what ``--reference`` must be a checkout of.
        load: checkout -> the official module.
        build: (module, gridattn configuration) -> the official model (eval).
        forward: (model, image) -> output, with the official test pipeline's padding and crop.
        presets: the presets benchmarked by default, with their table titles.
    """

    repository: str
    load: Callable
    build: Callable
    forward: Callable
    presets: dict[str, str]


def _swinir() -> OfficialCode:
    from official_reference import load_swinir_arch, official_swinir

    return OfficialCode("JingyunLiang/SwinIR", load_swinir_arch, official_swinir, lambda model, x: model(x),
                        {"classical": "SwinIR-M", "lightweight": "SwinIR-light"})  # the forward pads by reflection


def _hat() -> OfficialCode:
    from official_reference import load_hat_arch, official_hat, official_hat_forward

    return OfficialCode("XPixelGroup/HAT", load_hat_arch, official_hat, official_hat_forward,
                        {"hat_s": "HAT-S", "hat": "HAT"})


def _hmanet() -> OfficialCode:
    from official_reference import load_official_arch, official_hma_forward, official_model

    return OfficialCode("korouuuuu/HMA", load_official_arch, official_model, official_hma_forward,
                        {"official": "HMANet"})


def _dat() -> OfficialCode:
    from official_reference import load_dat_arch, official_dat

    return OfficialCode("zhengchen1999/DAT", load_dat_arch, official_dat, lambda model, x: model(x),
                        {"dat_light": "DAT-light", "dat": "DAT"})  # the forward pads inside its attention


OFFICIAL_CODE = {"swinir": _swinir, "hat": _hat, "hmanet": _hmanet, "dat": _dat}


@dataclass
class Bench:
    arch: str
    scale: int
    reference: str | None
    threads: int

    def __post_init__(self) -> None:
        self.code = OFFICIAL_CODE[self.arch]()
        self.registered = get_architecture(self.arch)
        self._module = None

    def official_module(self):
        if self._module is None:
            warnings.filterwarnings("ignore", message="torch.meshgrid")
            self._module = self.code.load(self.reference)
        return self._module

    def config(self, preset: str, numerics: str = "official"):
        return self.registered.preset(preset, self.scale, numerics=numerics)

    def shared_weights(self, preset: str) -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_model(self.config(preset)).eval()
        with torch.no_grad():  # the biases start at zero; make them count
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.02)
        return model

    def build(self, variant: str, preset: str, same_weights: bool = True) -> torch.nn.Module:
        """The model of ``variant`` (eval). ``same_weights``: the seeded weights every variant shares (the
        official model loads them); otherwise each keeps its own initialisation (memory does not depend on it)."""
        if variant == "official":
            model = self.code.build(self.official_module(), self.config(preset))
            if same_weights:
                weights = to_layout(self.shared_weights(preset), self.registered.layout(None))
                model.load_state_dict(weights, strict=True)
            return model.eval()
        model = build_model(self.config(preset, "corrected" if variant == "corrected" else "official")).eval()
        if same_weights:
            model.load_state_dict(self.shared_weights(preset).state_dict())
        return set_bias_cache(model, variant == "cached")

    def forward(self, model: torch.nn.Module, variant: str, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=variant == "bfloat16"):
            return self.code.forward(model, x) if variant == "official" else model(x)


# ------------------------------------------------------------------------------------------------------------
# memory: one forward in a fresh process

# glibc's mmap and trim thresholds fixed at 128 KiB in the probe: every tensor buffer is returned to the system
# when freed, so the resident set follows the live tensors (with glibc's dynamic defaults the same probe moves by
# +-100 MiB between runs, for the official code as for gridattn)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _status_kib(field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM``) of this process, KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")



def memory_probe(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    variant, preset, size = args.memory_probe
    bench = Bench(args.arch, args.scale, args.reference, args.threads)
    if variant == "official":
        bench.official_module()
    model = bench.build(variant, preset, same_weights=False)
    gc.collect()
    built = _status_kib("VmRSS")
    x = torch.rand(1, bench.config(preset).in_channels, int(size), int(size))
    bench.forward(model, variant, x)  # warm-up: lazy initialisation, gridattn's caches
    gc.collect()
    retained = _status_kib("VmRSS")
    _malloc_trim()  # what the warm-up freed but malloc kept would otherwise count as the next forward's
    trimmed = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:  # reset VmHWM to the current resident set
        clear.write("5")
    bench.forward(model, variant, x)
    print(json.dumps({"built_mib": built / 1024, "retained_mib": retained / 1024, "trimmed_mib": trimmed / 1024,
                      "peak_mib": _status_kib("VmHWM") / 1024}))


def _malloc_trim() -> None:
    """Give the heap's free memory back to the system (glibc; nothing elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_memory(variant: str, preset: str, size: int, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--memory-probe", variant, preset, str(size), "--arch", args.arch,
               "--scale", str(args.scale), "--threads", str(args.threads)]
    if args.reference:
        command += ["--reference", args.reference]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, **MALLOC_ENV})
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------


def run_model(bench: Bench, preset: str, args: argparse.Namespace, variants: list[str], peak: float) -> None:
    models = {v: bench.build(v, preset) for v in variants}
    title = bench.code.presets.get(preset, preset)
    for size in args.sizes:
        x = torch.rand(1, bench.config(preset).in_channels, size, size, generator=torch.Generator().manual_seed(size))
        outputs = {v: bench.forward(models[v], v, x) for v in variants}  # warm-up
        times: dict[str, list[float]] = {v: [] for v in variants}
        for round_ in range(args.repeats):
            for v in variants if round_ % 2 == 0 else variants[::-1]:
                start = time.perf_counter()
                bench.forward(models[v], v, x)
                times[v].append(time.perf_counter() - start)
        first = variants[0]
        counter = FlopCounterMode(display=False)
        with counter:
            bench.forward(models[first], first, x)
        flops = counter.get_total_flops() / 1e9
        base = statistics.median(times[first])
        memory = {v: measure_memory(v, preset, size, args) for v in variants} if not args.no_memory else {}
        for v in variants:
            median = statistics.median(times[v])
            diff = (outputs[v] - outputs[first]).abs().max().item()
            cells = [f"{title} x{args.scale}", str(size), v, f"{median:.3f}",
                     f"{min(times[v]):.3f}-{max(times[v]):.3f}", f"{base / median:.2f}x", f"{flops:.1f}",
                     f"{flops / median:.0f} ({flops / median / peak:.0%})"]
            if memory:
                m = memory[v]
                cells += [f"{m['peak_mib'] - m['trimmed_mib']:.0f}", f"{m['trimmed_mib'] - m['built_mib']:.0f}",
                          f"{m['retained_mib'] - m['trimmed_mib']:.0f}", f"{m['peak_mib']:.0f}"]
            cells.append(f"{diff:.1e}")
            print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(OFFICIAL_CODE), default="swinir")
    parser.add_argument("--reference", help="local checkout of the architecture's official repository")
    parser.add_argument("--models", nargs="+", default=None, help="presets of --arch (default: two per arch)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                        help="default: official (with --reference), gridattn")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--memory-probe", nargs=3, metavar=("VARIANT", "MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(args)
    bench = Bench(args.arch, args.scale, args.reference, args.threads)
    variants = args.variants or (["official"] if args.reference else []) + ["gridattn"]
    if "official" in variants and not args.reference:
        parser.error(f"variant 'official' needs --reference PATH (a checkout of {bench.code.repository})")
    presets = args.models or list(bench.code.presets)
    unknown = sorted(set(presets) - set(bench.registered.presets))
    if unknown:
        parser.error(f"unknown {bench.registered.title} presets {unknown}; expected some of "
                     f"{sorted(bench.registered.presets)}")
    torch.set_num_threads(args.threads)
    peak = matmul_peak(torch.device("cpu"), torch.float32)
    print(f"# {bench.registered.title} forward, float32 unless the variant says, batch 1, CPU, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {args.repeats} interleaved repeats; "
          f"float32 matrix-product peak {peak:.0f} GFLOP/s\n")
    header = ["model", "LR", "variant", "median s", "spread s", f"speed vs {variants[0]}", "GFLOPs",
              "GFLOP/s (of peak)"]
    if not args.no_memory:
        header += ["forward MiB", "held MiB", "malloc kept MiB", "process peak MiB"]
    header.append(f"max diff vs {variants[0]}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    for preset in presets:
        run_model(bench, preset, args, variants, peak)


if __name__ == "__main__":
    main()
