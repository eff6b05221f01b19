"""Which CUDA kernels run the attention of each layer (fused or not), by dtype and backend.

    python benchmarks/cuda_kernels.py

Profiles one forward of WindowAttention (shifted, masked) and GridAttention (two-stage) on the GPU and
prints the attention-like kernels the profiler saw (names containing fmha, flash, attention, softmax or
cudnn) with their share of the layer's CUDA time.
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from gridattn import GridAttention, WindowAttention
from gridattn.functional import available_backends

PATTERNS = ("fmha", "flash", "attention", "softmax", "cudnn", "efficient")


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    print(f"# Attention kernels on {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    layers = {"WindowAttention(45, 3, 16, shift 8)": (WindowAttention(45, 3, 16, 8), 45),
              "GridAttention(90, 3, interval 4)": (GridAttention(90, 3, 4, out_proj=False), 90)}
    for dtype in (torch.float32, torch.bfloat16):
        for backend, reason in available_backends("cuda", dtype).items():
            if reason:
                print(f"{backend} / {dtype}: unavailable ({reason})\n")
                continue
            for name, (layer, channels) in layers.items():
                layer = layer.cuda().to(dtype).eval()
                layer.backend = backend
                x = torch.randn(1, 128, 128, channels, device="cuda", dtype=dtype)
                with torch.inference_mode():
                    layer(x)
                    torch.cuda.synchronize()
                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        layer(x)
                        torch.cuda.synchronize()
                events = [e for e in prof.key_averages() if e.device_time_total > 0]
                total = sum(e.device_time_total for e in events)
                hits = [e for e in events if any(p in e.key.lower() for p in PATTERNS)]
                print(f"{name}, {backend}, {dtype}: {total / 1e3:.2f} ms of CUDA time")
                for e in sorted(hits, key=lambda e: -e.device_time_total):
                    print(f"  {e.device_time_total / total:6.1%}  {e.key[:110]}")
                print()


if __name__ == "__main__":
    main()
