"""Where the time of an ONNX export goes: torch.export, the ONNX translation, saving and checking.

    python benchmarks/onnx_export_time.py                          # official x4, dynamic and fixed
    python benchmarks/onnx_export_time.py --preset tiny --scale 2
    python benchmarks/onnx_export_time.py --depths 2 2 --modes dynamic   # official blocks, fewer of them
    python benchmarks/onnx_export_time.py --modes dynamic --profile prof.txt   # cProfile of each export

Runs the same steps as :func:`gridattn.export.export_onnx` one at a time and prints the seconds of each:
``torch.export.export`` (tracing, with symbolic batch / height / width for ``dynamic``), ``torch.onnx.export``
of the traced program (translation to ONNX, then the optimiser when ``--optimize``), ``onnx.save_model`` and
``onnx.checker.check_model``; then calls ``export_onnx`` itself for the total. ``--verify`` runs onnxruntime
against PyTorch at a few sizes afterwards. Random weights (the time does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import tempfile
import time
from pathlib import Path

import torch

from gridattn.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    _quiet_exporters,
    _without_slow_rewrite_rules,
    export_onnx,
    verify_onnx,
)
from gridattn.functional.backends import use_backend
from gridattn.models import HMANet, hmanet_config


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


@contextlib.contextmanager
def _timer(phases: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    phases[name] = time.perf_counter() - start
    print(f"  {name:<22} {phases[name]:8.1f} s", flush=True)


# steps inside torch.onnx.export (torch 2.13; any that is missing is not timed separately)
_ONNX_STEPS = (
    ("torch.onnx._internal.exporter._core", "_prepare_exported_program_for_export", "  decompositions"),
    ("torch.onnx._internal.exporter._core", "_exported_program_to_onnx_program", "  translation"),
    ("torch.onnx._internal.exporter._onnx_program", "ONNXProgram.optimize", "  optimiser"),
)


@contextlib.contextmanager
def _timed_onnx_steps(times: dict[str, float]):
    """Time the steps of torch.onnx.export by wrapping its internal functions (benchmark only)."""
    import importlib

    patched = []
    for module_name, attribute, label in _ONNX_STEPS:
        try:
            owner = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = getattr(owner, name)
        except (ImportError, AttributeError):
            continue

        def timed(*args, _original=original, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                times[_label] = times.get(_label, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        patched.append((owner, name, original))
    try:
        yield
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)


def phases(model: HMANet, path: Path, dynamic: bool, example_size: tuple[int, int], optimize: bool,
           profiler: cProfile.Profile | None = None) -> dict[str, float]:
    """The steps of export_onnx, timed one by one (same arguments as export_onnx uses)."""
    import onnx

    times: dict[str, float] = {}
    module = model.eval()
    batch = 2 if dynamic else 1
    example = torch.rand(batch, model.config.in_channels, *example_size, generator=torch.Generator().manual_seed(0))
    dim = torch.export.Dim.DYNAMIC
    dynamic_shapes = ({0: dim, 2: dim, 3: dim},) if dynamic else None
    with torch.no_grad(), use_backend("math"), _quiet_exporters():
        if profiler:
            profiler.enable()
        with _timer(times, "torch.export.export"):
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes, strict=False)
        steps: dict[str, float] = {}
        with _timer(times, "torch.onnx.export"), _timed_onnx_steps(steps), _without_slow_rewrite_rules():
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, opset_version=18,
                                             input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                             optimize=optimize, verbose=False)
        for label, seconds in steps.items():
            print(f"  {label:<22} {seconds:8.1f} s", flush=True)
        with _timer(times, "model_proto"):
            proto = onnx_program.model_proto
        with _timer(times, "onnx.save_model"):
            onnx.save_model(proto, os.fspath(path))
        with _timer(times, "onnx.checker"):
            onnx.checker.check_model(os.fspath(path))
        if profiler:
            profiler.disable()
    nodes = len(proto.graph.node)
    print(f"  {'graph':<22} {nodes} nodes, {os.path.getsize(path) / 2**20:.0f} MiB", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="official", choices=("official", "small", "tiny"))
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    parser.add_argument("--numerics", default="corrected", choices=("corrected", "official"))
    parser.add_argument("--depths", type=int, nargs="+", default=None,
                        help="FAB blocks per RHTB instead of the preset's (same heads)")
    parser.add_argument("--modes", nargs="+", default=["dynamic", "fixed"], choices=("dynamic", "fixed"))
    parser.add_argument("--example-size", type=_size, default=None,
                        help="traced size (default: two padding multiples, e.g. 32x32 for the official model)")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false", help="export_onnx(optimize=False)")
    parser.add_argument("--no-phases", dest="phases", action="store_false", help="only time export_onnx")
    parser.add_argument("--verify", nargs="*", type=_size, default=None, help="sizes to check with onnxruntime")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile summary of the phases here")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the .onnx files in")
    parser.add_argument("--all-rules", action="store_true",
                        help="keep every rewrite rule of the optimiser (the export before SlicesSplit was skipped)")
    args = parser.parse_args()
    if args.all_rules:
        import gridattn.export

        gridattn.export.SKIPPED_REWRITE_RULES = frozenset()

    config = hmanet_config(args.scale, args.preset, numerics=args.numerics)
    if args.depths:
        config = config.replace(depths=tuple(args.depths), num_heads=(config.num_heads[0],) * len(args.depths))
    torch.manual_seed(0)
    model = HMANet(config).eval()
    size = args.example_size or (2 * config.pad_multiple, 2 * config.pad_multiple)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="gridattn-onnx-time-"))
    folder.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"HMANet x{config.scale} {args.preset} depths {config.depths}, {params / 1e6:.1f} M parameters, "
          f"{config.numerics} numerics, traced at {size[0]}x{size[1]}, optimize={args.optimize}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    results = {}
    for mode in args.modes:
        dynamic = mode == "dynamic"
        path = folder / f"hmanet_{mode}.onnx"
        if args.phases:
            print(f"{mode}: phases", flush=True)
            profiler = cProfile.Profile() if args.profile else None
            times = phases(model, path, dynamic, size, args.optimize, profiler)
            if profiler is not None:
                stream = io.StringIO()
                stats = pstats.Stats(profiler, stream=stream)
                stats.sort_stats("cumulative").print_stats(80)
                stats.sort_stats("tottime").print_stats(40)
                with open(args.profile.with_suffix(f".{mode}.txt"), "w") as handle:
                    handle.write(stream.getvalue())
            print(f"  {'sum':<22} {sum(times.values()):8.1f} s", flush=True)
        info = export_onnx(model, path, dynamic=dynamic, example_size=size, optimize=args.optimize)
        results[mode] = info.seconds
        print(f"{mode}: export_onnx {info.seconds:.1f} s, input {info.input_shape}", flush=True)
        if args.verify is not None:
            sizes = args.verify or ([size, (size[0] + 5, size[1] - 3)] if dynamic else [size])
            for (h, w), diff in verify_onnx(info.path, model, sizes):
                print(f"  verify {h}x{w}: max abs diff {diff:.2e}", flush=True)
    print("\n| export | seconds |\n| --- | ---: |")
    for mode, seconds in results.items():
        print(f"| {mode} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
