"""Where HMANet's forward spends its time: the top operators of gridattn (and of the official model).

    python benchmarks/profile_hmanet.py --size 64 --reference /path/to/HMA-checkout [--device cuda]

One warm-up forward, then one profiled forward per model (official x4 configuration, shared weights, as in
hmanet_speed.py); prints the operators sorted by self time (CPU) or CUDA time.
"""

from __future__ import annotations

import argparse

import torch
from hmanet_speed import build, forward, set_tf32
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", help="local checkout of korouuuuu/HMA")
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        set_tf32(False, False)
    x = torch.rand(1, 3, args.size, args.size, device=device)
    for variant in (["official"] if args.reference else []) + ["fp32"]:
        model = build(variant, 4, device, args.reference)
        forward(model, variant, x)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            forward(model, variant, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"## {variant}, LR {args.size}, {device}\n")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
