"""Channel self-attention is linear in the number of pixels: time against map size, DAT's layer sizes.

    python benchmarks/channel_attention_scaling.py
    python benchmarks/channel_attention_scaling.py --reference /path/to/zhengchen1999-DAT-checkout

For each square map (``--sizes``, default 64 to 256), the forward of DAT's channel block (``ChannelSelfAttention``
in ``AdaptiveInteraction``: 180 channels, 6 heads) and, beside it, of its spatial block (``RectangleWindowAttention``
8x32 in ``AdaptiveInteraction``), batch 1, float32, eval, ``inference_mode``. With ``--reference`` the official
``Adaptive_Channel_Attention`` runs too, with the same weights (its output is checked against gridattn's). Every
variant runs once per round, the rounds interleaved; the table gives the median time, the time per pixel
(constant when the cost is linear) and the ratio of the time to that at the smallest map, against the ratio of
the pixel counts.

On glibc, buffers above 32 MiB are mapped afresh on every call and page-faulted (from about 240x240 pixels at 180
channels): ``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824``
keeps malloc's memory and shows the attention's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from gridattn import AdaptiveInteraction, ChannelSelfAttention, RectangleWindowAttention

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def official_channel_block(checkout: str, ours: AdaptiveInteraction) -> torch.nn.Module:
    """The official ``Adaptive_Channel_Attention`` with ``ours``' weights (the layout's renames: the attention's
    tensors sit in the block itself)."""
    from official_reference import load_dat_arch

    warnings.filterwarnings("ignore", message="torch.meshgrid")
    arch = load_dat_arch(checkout)
    block = arch.Adaptive_Channel_Attention(ours.dim, num_heads=ours.attention.num_heads, qkv_bias=True).eval()
    state = {k.replace("attention.", ""): v for k, v in ours.state_dict().items()}
    block.load_state_dict(state, strict=True)
    return block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 192, 256])
    parser.add_argument("--dim", type=int, default=180)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", help="checkout of zhengchen1999/DAT (adds the official channel block)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channel = AdaptiveInteraction(ChannelSelfAttention(args.dim, args.heads), attention_gate="spatial").eval()
    spatial = AdaptiveInteraction(RectangleWindowAttention(args.dim, args.heads, (8, 32), bias_hidden_dim=5),
                                  attention_gate="channel").eval()
    variants = {"channel (gridattn)": channel, "spatial 8x32 (gridattn)": spatial}
    official = official_channel_block(args.reference, channel) if args.reference else None

    def run(name: str, x: torch.Tensor) -> torch.Tensor:
        if name == "channel (official)":
            b, h, w, c = x.shape
            return official(x.reshape(b, h * w, c), h, w).reshape(b, h, w, c)
        return variants[name](x)

    names = list(variants) + (["channel (official)"] if official is not None else [])
    print(f"# DAT's attention blocks, {args.dim} channels, {args.heads} heads, batch 1, float32, CPU, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats} interleaved "
          "repeats\n")
    print("| block | map | pixels vs smallest | median ms | spread ms | ns per pixel | time vs smallest |")
    print("|---|---|---|---|---|---|---|")
    first: dict[str, float] = {}
    for size in args.sizes:
        x = torch.randn(1, size, size, args.dim)
        times = {name: [] for name in names}
        with torch.inference_mode():
            outputs = {name: run(name, x) for name in names}  # warm-up
            if official is not None:
                diff = (outputs["channel (official)"] - outputs["channel (gridattn)"]).abs().max().item()
                assert diff < 1e-4, f"the official channel block differs by {diff}"
            for r in range(args.repeats):
                for name in names if r % 2 == 0 else names[::-1]:
                    start = time.perf_counter()
                    run(name, x)
                    times[name].append(time.perf_counter() - start)
        for name in names:
            median = statistics.median(times[name])
            first.setdefault(name, median)
            pixels = size * size / args.sizes[0] ** 2
            print(f"| {name} | {size}x{size} | {pixels:.2f}x | {median * 1e3:.1f} | "
                  f"{min(times[name]) * 1e3:.1f}-{max(times[name]) * 1e3:.1f} | {median / size / size * 1e9:.0f} | "
                  f"{median / first[name]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
