"""Where HMANet's forward (or training step) spends its time: the top operators per variant, and the dtype
conversions.

    python benchmarks/profile_hmanet.py --size 64 --reference /path/to/HMA-checkout [--device cuda]
    python benchmarks/profile_hmanet.py --variants fp32 bf16                   # the bfloat16 forward's operators
    python benchmarks/profile_hmanet.py --train --variants fp32 bf16           # one training step (reduced config)

Forward: one warm-up, then one profiled forward per variant (official x4 configuration, shared weights, as in
hmanet_speed.py; variants ``official``, ``fp32``, ``bf16``). ``--train``: one warm-up step, then one profiled
step per variant of train_speed.py (reduced configuration, batch 8 of 32x32 unless ``--preset official``). Prints
the operators sorted by self time (CPU) or CUDA time, then, per variant, how many ``aten::_to_copy`` calls (dtype
and device conversions) ran and their self time.
"""

from __future__ import annotations

import argparse

import torch
from hmanet_speed import build, forward, set_tf32
from torch.profiler import ProfilerActivity, profile


def _conversions(prof) -> tuple[int, float]:
    """``aten::_to_copy`` calls and their CPU time in ms, the copies they make included."""
    calls, total = 0, 0.0
    for event in prof.key_averages():
        if event.key == "aten::_to_copy":
            calls += event.count
            total += event.cpu_time_total / 1e3  # with the copy it makes
    return calls, total


def _forward_runs(args, device):
    x = torch.rand(1, 3, args.size, args.size, device=device)
    for variant in args.variants:
        model = build(variant, 4, device, args.reference)
        yield f"{variant} forward, LR {args.size}", lambda model=model, variant=variant: forward(model, variant, x)


def _train_runs(args, device):
    import train_speed

    preset = args.preset or ("official" if device.type == "cuda" else "reduced")
    config = train_speed.config_of(preset, 4)
    lr, hr = train_speed.batches(config, 4 if preset == "official" else 8, 64 if preset == "official" else 32,
                                 device, 1)[0]
    for variant in args.variants:
        runner = train_speed.Runner(variant, config, device, args.reference)
        yield f"{variant} training step, {preset}", lambda runner=runner: runner.step(lr, hr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", help="local checkout of korouuuuu/HMA")
    parser.add_argument("--variants", nargs="+", choices=("official", "fp32", "bf16"), default=None,
                        help="default: official (with --reference) and fp32")
    parser.add_argument("--train", action="store_true", help="profile a training step instead of a forward")
    parser.add_argument("--preset", choices=("reduced", "official"), default=None, help="--train's configuration")
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        set_tf32(False, False)
    args.variants = args.variants or (["official"] if args.reference else []) + ["fp32"]
    if "official" in args.variants and not args.reference:
        parser.error("variant 'official' needs --reference PATH (a checkout of korouuuuu/HMA)")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    summary = []
    for title, run in (_train_runs if args.train else _forward_runs)(args, device):
        run()  # warm-up
        with profile(activities=activities) as prof:
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"## {title}, {device}, torch {torch.__version__}\n")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))
        total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3
        summary.append((title, *_conversions(prof), total))
    print("| run | aten::_to_copy calls | their CPU ms | all self CPU ms |")
    print("|---|---|---|---|")
    for title, calls, ms, total in summary:
        print(f"| {title} | {calls} | {ms:.1f} | {total:.1f} |")


if __name__ == "__main__":
    main()
