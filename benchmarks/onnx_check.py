"""HMANet exported to ONNX against PyTorch: per-size differences and onnxruntime vs PyTorch CPU time.

    python benchmarks/onnx_check.py                        # official x4 architecture, dynamic H/W, random weights
    python benchmarks/onnx_check.py --sizes 32x32 37x53 48x48 64x64 --numerics official
    python benchmarks/onnx_check.py --preset tiny --scale 2 --static

Exports the model once (``gridattn.export.export_onnx``; ``--static`` exports one fixed-size file per size
instead), then for each LR size runs the same uniform random image through onnxruntime (CPU execution
provider) and PyTorch (eval, no grad, default attention backend) and prints a Markdown table: max and mean
absolute difference of the outputs, and the median time of ``--repeats`` runs of each after one warm-up,
interleaved so that a busy machine affects both alike. Needs ``pip install 'gridattn[onnx]'``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gridattn.export import export_onnx
from gridattn.models import HMANet, hmanet_config


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="official", choices=("official", "small", "tiny"))
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    parser.add_argument("--numerics", default="corrected", choices=("corrected", "official"))
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(32, 32), (37, 53), (48, 48), (64, 64)])
    parser.add_argument("--example-size", type=_size, default=(32, 32), help="size traced for the dynamic export")
    parser.add_argument("--static", action="store_true", help="one fixed-size export per size")
    parser.add_argument("--opset", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the .onnx files in")
    args = parser.parse_args()

    import onnxruntime as ort

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = HMANet(hmanet_config(args.scale, args.preset, numerics=args.numerics)).eval()
    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    extra = {} if args.opset is None else {"opset": args.opset}
    folder = args.keep or Path(tempfile.mkdtemp(prefix="gridattn-onnx-"))
    sessions: dict[tuple[int, int] | None, object] = {}

    def session_for(size):
        key = size if args.static else None
        if key not in sessions:
            name = f"hmanet_x{args.scale}_{args.preset}_{args.numerics}"
            name += f"_{size[0]}x{size[1]}" if args.static else "_dynamic"
            info = export_onnx(model, folder / f"{name}.onnx", dynamic=not args.static,
                               example_size=size if args.static else args.example_size, **extra)
            print(f"exported {info.path} (opset {info.opset}, input {info.input_shape}) in {info.seconds:.1f} s",
                  flush=True)
            sessions[key] = ort.InferenceSession(str(info.path), options, providers=["CPUExecutionProvider"])
        return sessions[key]

    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for size in args.sizes:
        session = session_for(size)
        image = torch.rand(1, model.config.in_channels, *size, generator=generator)
        feed = {session.get_inputs()[0].name: image.numpy()}
        ort_times, torch_times = [], []
        with torch.no_grad():
            expected = model(image).numpy()  # warm-up of both
            actual = session.run(None, feed)[0]
            for _ in range(args.repeats):
                start = time.perf_counter()
                session.run(None, feed)
                ort_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                model(image)
                torch_times.append(time.perf_counter() - start)
        diff = np.abs(actual - expected)
        rows.append((size, float(diff.max()), float(diff.mean()), statistics.median(ort_times),
                     statistics.median(torch_times)))
        print(f"{size[0]}x{size[1]}: max {diff.max():.3g}, mean {diff.mean():.3g}", flush=True)

    print(f"\nHMANet x{args.scale} {args.preset} ({args.numerics} numerics), random weights, float32, "
          f"{'fixed-size exports' if args.static else 'one dynamic export'}, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}, {torch.get_num_threads()} threads\n")
    print("| LR size | max abs diff | mean abs diff | onnxruntime (s) | torch (s) | ort / torch |")
    print("| ------- | ------------ | ------------- | --------------- | --------- | ----------- |")
    for size, max_diff, mean_diff, ort_s, torch_s in rows:
        print(f"| {size[0]}x{size[1]} | {max_diff:.2e} | {mean_diff:.2e} | {ort_s:.3f} | {torch_s:.3f} | "
              f"{ort_s / torch_s:.2f} |")


if __name__ == "__main__":
    main()
