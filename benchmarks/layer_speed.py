"""Per-layer speed: each attention layer on its fast path against its own plain reference path.

    python benchmarks/layer_speed.py                 # CPU, float32
    python benchmarks/layer_speed.py --device cuda --dtype bfloat16

Layers at HMANet's sizes (x4 official config): WindowAttention (45 channels, 3 heads, window 16, shifted),
GridAttention (90 channels, 3 heads, two-stage) with 256, 1024 and 4096 tokens per group (maps of
64, 128 and 256 pixels, interval 4), FusedConv (180 channels). The fast path is the default attention
backend (``sdpa``), the reference path the ``math`` backend. FusedConv has no attention; its row compares
channels-last memory format with the default. Forward is timed under ``inference_mode`` in eval mode (the
position biases cached), forward+backward in training mode. Median of ``--repeats`` runs after warm-up,
the two paths interleaved. The table gives times in milliseconds and the speed-up of the fast path.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from gridattn import FusedConv, GridAttention, WindowAttention
from gridattn.functional import use_backend


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def cases(device: torch.device, dtype: torch.dtype, batch: int):
    """(name, layer, input) at HMANet's sizes."""
    yield "WindowAttention 16x16 shift 8, 64x64 map", WindowAttention(45, 3, 16, 8), (batch, 64, 64, 45)
    for size in (64, 128, 256):
        tokens = (size // 4) ** 2
        yield (f"GridAttention {tokens} tokens/group, {size}x{size} map", GridAttention(90, 3, 4, out_proj=False),
               (batch, size, size, 90))
    yield "FusedConv 180 ch, 64x64 map", FusedConv(180), (batch, 64, 64, 180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-backward-above", type=int, default=1024,
                        help="no forward+backward for grid groups larger than this many tokens (memory)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# Layer speed, {name}, {args.dtype}, batch {args.batch}, torch {torch.__version__}\n")
    print("| layer | pass | reference ms | fast ms | speed-up |")
    print("|---|---|---|---|---|")
    for label, layer, shape in cases(device, dtype, args.batch):
        torch.manual_seed(0)
        layer = layer.to(device, dtype)
        x = torch.randn(shape, device=device, dtype=dtype)
        is_conv = isinstance(layer, FusedConv)

        # the loop's layer, input and kind are bound as defaults (each closure belongs to one iteration)
        def path(fast: bool, layer=layer, is_conv=is_conv):
            if is_conv:  # FusedConv: channels-last convolution memory format against the default
                layer.expand.to(memory_format=torch.channels_last if fast else torch.contiguous_format)
                return contextlib.nullcontext()
            return contextlib.nullcontext() if fast else use_backend("math")

        def forward(fast: bool, layer=layer, x=x) -> None:
            layer.eval()
            with path(fast), torch.inference_mode():
                layer(x)

        def forward_backward(fast: bool, layer=layer, x=x) -> None:
            layer.train()
            with path(fast):
                y = layer(x.requires_grad_())
                y.float().square().mean().backward()
            layer.zero_grad(set_to_none=True)
            x.grad = None

        passes = [("forward", forward)]
        tokens = (shape[1] // 4) * (shape[2] // 4)
        if not (isinstance(layer, GridAttention) and tokens > args.skip_backward_above):
            passes.append(("forward+backward", forward_backward))
        for pass_name, run in passes:
            times = {False: [], True: []}
            for fast in (False, True):
                run(fast)  # warm-up
            for _ in range(args.repeats):
                for fast in (False, True):
                    times[fast].append(timed(lambda run=run, fast=fast: run(fast), device))
            reference, fast = statistics.median(times[False]) * 1e3, statistics.median(times[True]) * 1e3
            print(f"| {label} | {pass_name} | {reference:.1f} | {fast:.1f} | {reference / fast:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
