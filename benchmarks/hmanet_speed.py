"""HMANet inference speed and memory: gridattn against itself and (optionally) the official implementation.

    python benchmarks/hmanet_speed.py --reference /path/to/korouuuuu-HMA-checkout --sizes 64 128 256
    python benchmarks/hmanet_speed.py --device cuda --variants fp32 tf32 bf16 math

Prints a Markdown table per LR size: median forward time (after warm-up, the variants' runs interleaved so
that a noisy machine affects them alike), its ratio to the official model (or to the first variant),
peak memory, the FLOPs of one forward (``torch.utils.flop_counter``), the achieved GFLOP/s and its
fraction of the float32 (or bfloat16, TF32) matrix-product peak measured in the same run (FLOPs of the
model's arithmetic, counted on the plain attention path), and the largest
difference from the official output (or from gridattn float32).

Peak memory on CUDA is ``torch.cuda.max_memory_allocated`` of the forward; on CPU it is the peak resident
set, sampled every millisecond while one forward runs in a fresh process (weights included, model building
excluded; ``--no-memory`` skips those processes).
Variants: ``official`` (needs ``--reference``), ``fp32`` (gridattn, official numerics, default backend),
``math`` (the same with the plain attention path: backend ``math``), ``bf16`` (bfloat16 autocast),
``tf32`` (CUDA TF32 matmuls), ``corrected`` (gridattn's corrected numerics, float32).
The model is the official x4 configuration (embed 180, 6x6 blocks, window 16), randomly initialised and
shared by every variant (the official one gets the same weights through ``to_official_state_dict``). gridattn's
models run with the bias cache on (``gridattn.layers.set_bias_cache``), as ``upscale`` runs them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from gridattn.functional import use_backend
from gridattn.layers import set_bias_cache
from gridattn.models import HMANet, hmanet_config, to_official_state_dict

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("official", "fp32", "math", "bf16", "tf32", "corrected")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(variant: str, scale: int, device: torch.device, reference: str | None) -> torch.nn.Module:
    """The model of ``variant`` with the weights every variant shares (seed 0)."""
    torch.manual_seed(0)
    ours = HMANet(hmanet_config(scale, numerics="official")).eval()
    with torch.no_grad():  # the biases start at zero; make them count
        for name, p in ours.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    if variant == "official":
        sys.path.insert(0, str(ROOT / "tools"))
        from official_reference import load_official_arch, official_model

        model = official_model(load_official_arch(reference), ours.config)
        model.load_state_dict(to_official_state_dict(ours), strict=True)
        return model.to(device)
    if variant == "corrected":
        corrected = HMANet(ours.config.replace(numerics="corrected")).eval()
        corrected.load_state_dict(ours.state_dict())
        ours = corrected
    return set_bias_cache(ours.to(device), True)  # deployed as upscale runs it: biases once per size


@contextlib.contextmanager
def variant_context(variant: str, device: torch.device):
    """Backend, autocast and TF32 settings of ``variant`` (restored afterwards)."""
    with contextlib.ExitStack() as stack:
        if variant == "math":
            stack.enter_context(use_backend("math"))
        if variant == "bf16":
            stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        if variant == "tf32":
            previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            stack.callback(lambda: set_tf32(*previous))
        yield


def set_tf32(matmul: bool, cudnn: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def forward(model: torch.nn.Module, variant: str, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(), variant_context(variant, x.device):
        return model(x).float()


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """GFLOP/s of a square matrix product (1024 on CPU, 8192 on GPU; median of ``repeats``).

    A size is tried at 256 first: CPUs without bfloat16 units run bfloat16 products at ~1 GFLOP/s, and the
    measurement stays short there."""
    n = 256
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b  # library initialisation
    synchronize(device)
    start = time.perf_counter()
    a @ b
    synchronize(device)
    if time.perf_counter() - start < 0.05:
        n = 8192 if device.type == "cuda" else 1024
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        for _ in range(3):
            a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def count_flops(model: torch.nn.Module, variant: str, x: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        forward(model, variant, x)
    return counter.get_total_flops()


def peak_memory_subprocess(variant: str, size: int, args: argparse.Namespace) -> float:
    """Peak RSS (GiB) of a fresh process that builds ``variant`` and runs one forward at ``size``."""
    command = [sys.executable, __file__, "--memory-probe", variant, "--sizes", str(size), "--scale", str(args.scale)]
    if args.reference:
        command += ["--reference", args.reference]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_gib"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def memory_probe(args: argparse.Namespace) -> None:
    """Peak resident memory while the forward runs (sampled every millisecond), so that building the model
    (which for the official variant converts weights through a gridattn model) does not count."""
    device = torch.device("cpu")
    model = build(args.memory_probe, args.scale, device, args.reference)
    gc.collect()
    x = torch.rand(1, 3, args.sizes[0], args.sizes[0])
    peak, running = [_rss_bytes()], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    forward(model, args.memory_probe, x)
    running[0] = False
    sampler.join()
    print(json.dumps({"peak_gib": peak[0] / 2**30}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                        help="default: official (with --reference), fp32, math, bf16 (+ tf32 on CUDA)")
    parser.add_argument("--reference", help="local checkout of korouuuuu/HMA")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="CPU: skip the peak-RSS processes")
    parser.add_argument("--memory-probe", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(args)

    device = torch.device(args.device)
    if device.type == "cuda":  # float32 means float32: TF32 only in the tf32 variant (cuDNN enables it by default)
        set_tf32(False, False)
    variants = args.variants or (["official"] if args.reference else []) + ["fp32", "math", "bf16"] + (
        ["tf32"] if device.type == "cuda" else [])
    if "official" in variants and not args.reference:
        parser.error("variant 'official' needs --reference PATH (a checkout of korouuuuu/HMA)")
    peaks = {"float32": matmul_peak(device, torch.float32), "bfloat16": matmul_peak(device, torch.bfloat16)}
    if device.type == "cuda":
        with variant_context("tf32", device):
            peaks["tf32"] = matmul_peak(device, torch.float32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# HMANet x{args.scale} (official config) forward, batch 1, {name}, torch {torch.__version__}")
    print("matrix-product peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()) + "\n")
    if "bf16" in variants and peaks["bfloat16"] < peaks["float32"] / 2 and not args.variants:
        variants.remove("bf16")
        print("bf16 skipped: this processor multiplies bfloat16 matrices slower than float32 ones "
              "(no bfloat16 units)\n")
    baseline = variants[0]
    models = {v: build(v, args.scale, device, args.reference) for v in variants}

    for size in args.sizes:
        torch.manual_seed(1)
        x = torch.rand(1, 3, size, size, device=device)
        outputs, times = {}, {v: [] for v in variants}
        memory = {}
        for v in variants:  # warm-up (caches, kernels), reference outputs, CUDA peak memory
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            outputs[v] = forward(models[v], v, x)
            if device.type == "cuda":
                memory[v] = torch.cuda.max_memory_allocated(device) / 2**30
        for _ in range(args.repeats):
            for v in variants:
                synchronize(device)
                start = time.perf_counter()
                forward(models[v], v, x)
                synchronize(device)
                times[v].append(time.perf_counter() - start)
        if device.type == "cpu" and not args.no_memory:
            memory = {v: peak_memory_subprocess(v, size, args) for v in variants}
        reference = outputs["official"] if "official" in outputs else outputs.get("fp32", outputs[baseline])
        print(f"## LR {size}x{size} -> HR {size * args.scale}x{size * args.scale}\n")
        print(f"| variant | median s | speed-up vs {baseline} | peak mem GiB | GFLOPs | GFLOP/s | of mm peak "
              "| max abs diff |")
        print("|---|---|---|---|---|---|---|---|")
        base_time = statistics.median(times[baseline])
        for v in variants:
            median = statistics.median(times[v])
            # useful FLOPs: counted on the plain attention path (flop_counter has no formula for PyTorch's CPU
            # flash kernel, and the CUDA kernels' padded head widths are not useful work)
            flops = count_flops(models[v], "official" if v == "official" else "math", x) / 1e9
            peak = peaks[{"bf16": "bfloat16", "tf32": "tf32"}.get(v, "float32")]
            mem = f"{memory[v]:.2f}" if v in memory else "-"
            diff = (outputs[v] - reference).abs().max().item()
            print(f"| {v} | {median:.3f} | {base_time / median:.2f}x | {mem} | {flops:.1f} | {flops / median:.0f} | "
                  f"{flops / median / peak:.0%} | {diff:.2e} |")
        print(flush=True)


if __name__ == "__main__":
    main()
