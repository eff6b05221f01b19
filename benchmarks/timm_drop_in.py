"""How close converted timm models are to timm, at the size timm was built for and at sizes it refuses or gets wrong.

Run in the venv with timm (``.ci/torchvision`` builds it): ``.venv-torchvision/bin/python benchmarks/timm_drop_in.py``.
Full-size registered models with random weights (timm's init, every weight perturbed by N(0, 0.05) so that layer
scales and zero heads do not hide the attention). Prints the largest absolute difference of the final features
divided by their largest magnitude, in float32 and float64:

* ``converted vs timm``: the converted model against timm itself, where timm partitions exactly;
* ``converted vs masked``: against timm's own blocks driven with their padding masked (tests/timm_reference.py);
* ``timm vs masked``: how far timm's own output is from that, where timm runs at all;
* ``f32 rounding``: the converted float32 model against the float64 reference: the float32 differences above are
  of this size (deep random models amplify rounding), not differences of method.

Then the forward time of both at the size timm was built for (median, float32, batch 1, interleaved runs).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import timm_reference  # noqa: E402

from gridattn.integrations.timm import convert  # noqa: E402

MODELS = {"swin_tiny_patch4_window7_224": [(224, 224), (256, 256), (320, 200)],
          "swinv2_tiny_window8_256": [(256, 256), (224, 224), (320, 200)],
          "maxvit_tiny_tf_224": [(224, 224), (256, 256), (320, 192)]}


def perturbed(name: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    # Swin: timm's dynamic mode (masks built per input size), so that timm runs at other sizes at all
    overrides = {"strict_img_size": False} if name.startswith("swin") else {}
    model = timm.create_model(name, pretrained=False, **overrides).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.to(dtype)


def relative(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{((a.double() - b.double()).abs().max() / b.double().abs().max()).item():.1e}"


def features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor | str:
    """The model's final features, or why timm refused the size."""
    with torch.no_grad():
        try:
            return model.forward_features(x)
        except (AssertionError, RuntimeError) as error:
            return f"refused ({str(error).splitlines()[0][:50]})"


def speed_table(repeats: int) -> None:
    """Forward time of timm and of the converted model at the size timm was built for (float32, batch 1)."""
    print("| model | input | timm ms | converted ms | converted / timm |")
    print("|---|---|---|---|---|")
    for name, sizes in MODELS.items():
        timm_model = perturbed(name, torch.float32)
        converted = convert(copy.deepcopy(timm_model))
        x = torch.randn(1, 3, *sizes[0], generator=torch.Generator().manual_seed(1))
        times = {}
        with torch.no_grad():
            for label, model in (("timm", timm_model), ("converted", converted)) * 2:  # interleaved, twice
                model(x)  # warm-up (and the converted model's bias cache)
                runs = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model(x)
                    runs.append(time.perf_counter() - start)
                times.setdefault(label, []).extend(runs)
        ms = {label: 1000 * statistics.median(runs) for label, runs in times.items()}
        print(f"| {name} | {sizes[0][0]}x{sizes[0][1]} | {ms['timm']:.1f} | {ms['converted']:.1f} | "
              f"{ms['converted'] / ms['timm']:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tables", nargs="+", choices=["accuracy", "speed"], default=["accuracy", "speed"])
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per model and round (speed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"timm {timm.__version__}, torch {torch.__version__}, CPU, {args.threads} threads\n")
    if "accuracy" in args.tables:
        accuracy_table()
    if "speed" in args.tables:
        print()
        speed_table(args.repeats)


def accuracy_table() -> None:
    print("| model | input | converted vs timm, f32 / f64 | converted vs masked, f32 / f64 | timm vs masked, f64 "
          "| f32 rounding: converted f32 vs masked f64 |")
    print("|---|---|---|---|---|---|")
    for name, sizes in MODELS.items():
        models = {}
        for dtype in (torch.float32, torch.float64):
            timm_model = perturbed(name, dtype)
            models[dtype] = (timm_model, timm_reference.masked(copy.deepcopy(timm_model)),
                             convert(copy.deepcopy(timm_model)))
        for size in sizes:
            x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            out = {dtype: [features(m, x.to(dtype)) for m in trio] for dtype, trio in models.items()}
            (timm32, masked32, ours32), (timm64, masked64, ours64) = out[torch.float32], out[torch.float64]
            if isinstance(timm64, str):
                vs_timm, timm_vs_masked = timm64, "-"
            else:
                vs_timm, timm_vs_masked = f"{relative(ours32, timm32)} / {relative(ours64, timm64)}", relative(
                    timm64, masked64)
            row = [name, f"{size[0]}x{size[1]}", vs_timm,
                   f"{relative(ours32, masked32)} / {relative(ours64, masked64)}", timm_vs_masked,
                   relative(ours32, masked64)]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
