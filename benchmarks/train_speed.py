"""One HMANet training step (L1 + Adam), gridattn against the official code, samples/s and peak memory.

    python benchmarks/train_speed.py --reference /path/to/korouuuuu-HMA-checkout               # CPU, reduced
    python benchmarks/train_speed.py --reference HMA --device cuda --variants official fp32 tf32 bf16 bf16+compile

A step is what the trainer does: ``loss = L1(model(lr), hr)``, ``backward``, ``Adam(betas=(0.9, 0.99)).step()``,
``zero_grad``. Presets: ``official`` is the official x4 configuration at its training patch (LR 64, batch 4);
``reduced`` (the CPU default) is embed 48, depths [2, 2], window 8, interval 4, batch 8 of 32x32 LR patches.
Drop path is off in both (the two codes draw it differently, and the first step's gradients are compared).

Every variant starts from the same weights (seed 0; the official model gets them through
``to_official_state_dict``) and trains on the same batches. Variants: ``official`` (the official code, float32),
``fp32`` (gridattn, official numerics), ``corrected`` (gridattn's corrected numerics), ``tf32`` (CUDA TF32
matmuls), ``bf16`` (bfloat16 autocast, as the trainer runs wherever ``bfloat16_pays``: by default then);
``+compile`` after a gridattn variant runs
the model through ``torch.compile``. Steps are timed after warm-up, the variants' steps interleaved so that a
noisy machine affects them alike; the table gives the median samples/s, the ratio to the first variant, the peak
memory of a step (CUDA: ``max_memory_allocated``; "-" on a CPU) and, before any timing, the first step's loss and
gradients against the first variant's (the L2 norm of the difference of all gradients over the norm of the first
variant's, names mapped through ``to_official_state_dict``). ``--kernels`` lists the attention kernels of a CUDA step,
forward and backward (torch.profiler).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gridattn.functional import bfloat16_pays
from gridattn.models import HMANet, hmanet_config, to_official_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, also when imported
from cuda_kernels import PATTERNS  # noqa: E402  (the attention-kernel name patterns)
from hmanet_speed import synchronize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASES = ("official", "fp32", "corrected", "tf32", "bf16")


def config_of(preset: str, scale: int):
    # no drop path: the two codes draw it differently, and the first step's gradients are compared
    config = hmanet_config(scale, numerics="official").replace(drop_path_rate=0.0)
    if preset == "official":
        return config
    # the official code's grid-bias width, dim // 4 // 4 (1 here; gridattn's default would be 4)
    return config.replace(embed_dim=48, depths=(2, 2), num_heads=(6, 6), window_size=8, grid_bias_dim=48 // 2 // 16)


def build(variant: str, config, device: torch.device, reference: str | None) -> torch.nn.Module:
    """The model of ``variant`` in train mode, with the weights every variant shares."""
    torch.manual_seed(0)
    ours = HMANet(config)
    with torch.no_grad():  # the biases start at zero; make them count
        for name, p in ours.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    base = variant.removesuffix("+compile")
    if base == "official":
        if reference is None:
            raise SystemExit("the official variant needs --reference (a checkout of korouuuuu/HMA)")
        sys.path.insert(0, str(ROOT / "tools"))
        from official_reference import load_official_arch, official_model

        model = official_model(load_official_arch(reference), config)
        model.load_state_dict(to_official_state_dict(ours), strict=True)
    elif base == "corrected":
        model = HMANet(config.replace(numerics="corrected"))
        model.load_state_dict(ours.state_dict())
    else:
        model = ours
    return model.to(device).train()


def precision(variant: str, device: torch.device):
    base = variant.removesuffix("+compile")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = base == "tf32"
    if base == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Runner:
    """One variant: its model, optimiser and the step."""

    def __init__(self, variant: str, config, device: torch.device, reference: str | None) -> None:
        if variant.endswith("+compile") and variant.startswith("official"):
            raise SystemExit("+compile applies to gridattn's variants")
        self.variant, self.device = variant, device
        self.model = build(variant, config, device, reference)
        self.forward = torch.compile(self.model) if variant.endswith("+compile") else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=2e-4, betas=(0.9, 0.99))

    def loss(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with precision(self.variant, self.device):
            return F.l1_loss(self.forward(lr).float(), hr)

    def step(self, lr: torch.Tensor, hr: torch.Tensor) -> float:
        loss = self.loss(lr, hr)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def first_gradients(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
        """Loss and gradients of one step (no update), keyed by the official names."""
        loss = self.loss(lr, hr)
        loss.backward()
        if self.variant.startswith("official"):
            grads = {k: p.grad.detach().double().cpu() for k, p in self.model.named_parameters()}
        else:  # gridattn's gradients under official names: the same mapping as the weights
            holder = HMANet(self.model.config)
            with torch.no_grad():
                for p, q in zip(holder.parameters(), self.model.parameters()):
                    p.copy_(q.grad)
            grads = {k: v.double() for k, v in to_official_state_dict(holder).items()}
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item(), grads


def batches(config, batch: int, patch: int, device: torch.device, count: int) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        hr = torch.rand(batch, 3, patch * config.scale, patch * config.scale, generator=gen)
        lr = F.interpolate(hr, scale_factor=1 / config.scale, mode="bicubic", antialias=True).clamp(0, 1)
        out.append((lr.to(device), hr.to(device)))
    return out


def compare(runners: list[Runner], lr: torch.Tensor, hr: torch.Tensor) -> dict[str, str]:
    """First step of every variant against the first variant's: loss and gradients."""
    base_loss, base_grads = runners[0].first_gradients(lr, hr)
    out = {runners[0].variant: "reference"}
    for runner in runners[1:]:
        loss, grads = runner.first_gradients(lr, hr)
        keys = [k for k in base_grads if k in grads]
        base = torch.cat([base_grads[k].flatten() for k in keys])
        difference = (torch.cat([grads[k].flatten() for k in keys]) - base).norm() / base.norm()
        out[runner.variant] = f"loss {abs(loss - base_loss):.1e}, gradients {difference.item():.1e}"
    return out


def kernels(runner: Runner, lr: torch.Tensor, hr: torch.Tensor) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    runner.step(lr, hr)
    synchronize(runner.device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        runner.step(lr, hr)
        synchronize(runner.device)
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events)
    hits = [e for e in events if any(p in e.key.lower() for p in PATTERNS)]
    hits.sort(key=lambda e: -e.device_time_total)
    return [f"{e.device_time_total / total:6.1%}  {e.key[:110]}" for e in hits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="a checkout of korouuuuu/HMA (for the official variant)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", choices=["reduced", "official"], default=None,
                        help="default: official on CUDA, reduced on a CPU")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch", type=int, default=None, help="default: 4 (official), 8 (reduced)")
    parser.add_argument("--patch", type=int, default=None, help="LR patch; default: 64 (official), 32 (reduced)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"from {', '.join(BASES)}, gridattn's with +compile; default: official fp32 corrected "
                             "(bf16 too where bfloat16 pays), without official when --reference is not given")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--kernels", action="store_true", help="CUDA: attention kernels of a step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    preset = args.preset or ("official" if device.type == "cuda" else "reduced")
    batch = args.batch or (4 if preset == "official" else 8)
    patch = args.patch or (64 if preset == "official" else 32)
    variants = args.variants or (["official"] * bool(args.reference) + ["fp32", "corrected"]
                                 + ["bf16"] * bfloat16_pays(device))  # as the trainer decides
    for variant in variants:
        if variant.removesuffix("+compile") not in BASES:
            raise SystemExit(f"unknown variant {variant!r}")
    config = config_of(preset, args.scale)
    runners = [Runner(v, config, device, args.reference) for v in variants]
    data = batches(config, batch, patch, device, args.warmup + args.repeats)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# HMANet x{config.scale} training step ({preset}: embed {config.embed_dim}, depths "
          f"{list(config.depths)}, window {config.window_size}; batch {batch} of {patch}x{patch} LR), {name}, "
          f"torch {torch.__version__}\n")
    checks = compare(runners, *data[0])
    times: dict[str, list[float]] = {r.variant: [] for r in runners}
    peaks: dict[str, int] = {}
    for index, (lr, hr) in enumerate(data):
        for runner in runners:  # interleaved
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            start = time.perf_counter()
            runner.step(lr, hr)
            synchronize(device)
            if index >= args.warmup:
                times[runner.variant].append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks[runner.variant] = max(peaks.get(runner.variant, 0), torch.cuda.max_memory_allocated(device))
    first = statistics.median(times[variants[0]])
    print(f"| variant | samples/s | vs {variants[0]} | peak memory | first step vs {variants[0]} |")
    print("|---|---|---|---|---|")
    for variant in variants:
        median = statistics.median(times[variant])
        memory = f"{peaks[variant] / 2**20:.0f} MiB" if variant in peaks else "-"
        print(f"| {variant} | {batch / median:.2f} | {first / median:.2f}x | {memory} | {checks[variant]} |")
    if args.kernels and device.type == "cuda":
        for runner in runners:
            print(f"\nattention kernels of one {runner.variant} step (share of CUDA time):")
            print("\n".join(kernels(runner, *data[0])) or "  (none matched)")


if __name__ == "__main__":
    main()
