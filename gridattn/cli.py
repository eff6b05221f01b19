"""The ``gridattn`` command line: ``train`` the staged recipe, ``upscale`` images, ``evaluate`` on a benchmark
folder, ``export-onnx``, ``info``. Every ``--checkpoint`` takes a checkpoint file or a training stage folder.

Errors a user can make (missing folder, no images, unreadable or too large image, damaged or wrong
checkpoint, unwritable output) print one line and exit with status 2. Anything else is a bug: it prints one
line too (status 1), and the traceback with ``--traceback``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from ._arguments import Parser, non_negative_int, positive_int
from ._errors import InputError, LayoutAssumedWarning, one_line
from .data import IMAGE_SUFFIXES, benchmark_pairs, list_images, read_image, write_image
from .evaluation import evaluate
from .functional.precision import DTYPE_CHOICES
from .inference import upscale
from .models import architectures, load_model

CHECKPOINT_HELP = (f"model checkpoint ({', '.join(a.title for a in architectures().values())}): .safetensors / .pth "
                   "written by gridattn, an official release, a trainer's last.pt, or a training stage folder (its "
                   "model.safetensors)")
DTYPE_HELP = ("what the model computes in: auto (default) is bfloat16 for upscale where this device runs it faster "
              "(gridattn info says), float32 for evaluate (the benchmark protocol)")
LAYOUT_HELP = ("layout of a checkpoint without gridattn's configuration: official (default) or neosr (HMA files "
               "trained with neosr, RGB mean 0.5)")


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine")
    return torch.device(name)


def _load_model(args, scale: int | None, device: torch.device):
    """The model of ``--checkpoint`` (and ``--layout``); a layout assumed for an ambiguous file is said on stderr."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LayoutAssumedWarning)
            model = load_model(args.checkpoint, map_location=device, scale=scale, layout=args.layout)
    except ImportError as error:  # reading .safetensors without safetensors; checkpoint errors are input errors
        raise UserError(str(error)) from None
    for warning in caught:
        if issubclass(warning.category, LayoutAssumedWarning):
            print(f"gridattn: note: {args.checkpoint}: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return model


def _cmd_upscale(args) -> int:
    device = _device(args.device)
    files = list_images(*args.inputs)
    model = _load_model(args, None, device)
    out = Path(args.output)
    single_file = len(files) == 1 and out.suffix.lower() in IMAGE_SUFFIXES
    for path in files:
        image = read_image(path)
        result = upscale(model, image, tile=args.tile, tile_overlap=args.tile_overlap,
                         self_ensemble=args.self_ensemble, progress=not args.quiet, compile=args.compile,
                         dtype=args.dtype)
        target = out if single_file else out / f"{path.stem}.png"
        write_image(target, result)
        if not args.quiet:
            print(f"{path} -> {target} ({image.shape[1]}x{image.shape[0]} -> {result.shape[1]}x{result.shape[0]})")
    return 0


def _cmd_export_onnx(args) -> int:
    from .export import OnnxExportError, export_onnx, verify_onnx

    model = _load_model(args, None, torch.device("cpu"))
    size = tuple(args.size)
    try:
        info = export_onnx(model, args.output, opset=args.opset, dynamic=args.dynamic, example_size=size)
    except (ImportError, OnnxExportError) as error:
        raise UserError(str(error)) from None
    shape = "x".join("?" if d is None else str(d) for d in info.input_shape)
    print(f"{args.checkpoint} -> {info.path} (opset {info.opset}, input {info.input_name} {shape}, "
          f"x{info.scale}, {info.seconds:.0f} s)")
    if args.verify:
        sizes = [size] if not args.dynamic else [size, (size[0] // 2 + 3, size[1] + 5)]
        try:
            results = verify_onnx(info.path, model, sizes)
        except ImportError as error:
            raise UserError(str(error)) from None
        for (height, width), difference in results:
            print(f"onnxruntime vs PyTorch at {height}x{width}: max abs difference {difference:.2e}")
    return 0


def _cmd_train(args) -> int:
    from .train.launch import launch

    launch(args)  # its refusals are input errors
    return 0


def _cmd_info(args) -> int:
    from .info import collect_info, format_info

    report = collect_info()
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0


def _cmd_evaluate(args) -> int:
    device = _device(args.device)
    benchmark_pairs(args.hr, args.scale, args.lr)  # folder errors before the model is loaded
    model = None if args.bicubic else _load_model(args, args.scale, device)
    result = evaluate(model, args.hr, args.scale, lr_folder=args.lr, tile=args.tile, tile_overlap=args.tile_overlap,
                      self_ensemble=args.self_ensemble, dtype=args.dtype)
    if args.json:
        print(json.dumps({"psnr": result.psnr, "ssim": result.ssim, "images": len(result.per_image),
                          "scale": args.scale, "method": "bicubic" if model is None else str(args.checkpoint),
                          "per_image": [{"image": s.image, "psnr": s.psnr, "ssim": s.ssim} for s in result.per_image]}))
        return 0
    width = max(len("mean"), *(len(s.image) for s in result.per_image))
    print(f"| {'image':<{width}} | PSNR (dB) | SSIM   |")
    print(f"| {'-' * width} | --------- | ------ |")
    for s in result.per_image:
        print(f"| {s.image:<{width}} | {s.psnr:9.4f} | {s.ssim:.4f} |")
    print(f"| {'mean':<{width}} | {result.psnr:9.4f} | {result.ssim:.4f} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gridattn", description="Super-resolution with HMANet, SwinIR, HAT and DAT.")
    parser.add_argument("--traceback", action="store_true", help="show the traceback of unexpected errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    up = commands.add_parser("upscale", help="upscale images or folders of images to PNG files")
    up.add_argument("inputs", nargs="+", help="image files or folders")
    up.add_argument("-o", "--output", required=True,
                    help="output folder (or an image path for one input; its suffix picks the format)")
    up.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    up.set_defaults(run=_cmd_upscale)

    ev = commands.add_parser("evaluate", help="PSNR / SSIM (Y channel) on a folder of high-resolution images")
    ev.add_argument("--hr", required=True, help="folder of high-resolution images")
    ev.add_argument("--scale", type=int, required=True, choices=(2, 3, 4, 8))
    method = ev.add_mutually_exclusive_group(required=True)
    method.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    method.add_argument("--bicubic", action="store_true", help="MATLAB bicubic upsampling (the baseline)")
    ev.add_argument("--lr", help="folder of given low-resolution images (same names) instead of making them")
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ev.set_defaults(run=_cmd_evaluate)

    onnx = commands.add_parser("export-onnx", help="export a checkpoint to ONNX (pip install 'gridattn[onnx]')")
    onnx.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    onnx.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    onnx.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (18-23; default 18)")
    onnx.add_argument("--dynamic", action="store_true",
                      help="any batch, height and width (slower to export); default: fixed to --size")
    onnx.add_argument("--size", type=positive_int, nargs=2, default=(64, 64), metavar=("H", "W"),
                      help="LR input size of a fixed export, or the traced example of a dynamic one (default 64 64)")
    onnx.add_argument("--verify", action="store_true", help="compare onnxruntime with PyTorch and print the difference")
    onnx.set_defaults(run=_cmd_export_onnx)

    from .train.launch import add_train_arguments

    add_train_arguments(commands.add_parser(
        "train", help="train a model (--arch, default HMANet) with the staged recipe (x2 -> x3 -> x2/x4 -> "
        "fine-tunes); each stage folder "
        "ends with model.safetensors")).set_defaults(run=_cmd_train)

    info = commands.add_parser("info", help="versions, devices, and which attention backends and dtypes run")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_cmd_info)

    for sub in (up, ev, onnx):
        sub.add_argument("--layout", choices=("official", "neosr"), default=None, help=LAYOUT_HELP)
    for sub in (up, ev):
        sub.add_argument("--tile", type=positive_int, default=None,
                         help="tile size in LR pixels (default: whole image)")
        sub.add_argument("--tile-overlap", type=non_negative_int, default=16, help="tile overlap in LR pixels")
        sub.add_argument("--self-ensemble", action="store_true", help="average 8 flips/rotations")
        sub.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
        sub.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    up.add_argument("--quiet", action="store_true", help="no progress output")
    up.add_argument("--compile", action="store_true",
                    help="torch.compile the model (CUDA: CUDA graphs); pays off for many images or tiles of one size")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (UserError, InputError, FileNotFoundError) as error:  # what the user can fix; anything else is a bug
        print("gridattn: error: " + one_line(error), file=sys.stderr)
        return 2
    except (torch.OutOfMemoryError, MemoryError):
        print("gridattn: error: out of memory; use a smaller --tile", file=sys.stderr)
        return 2
    except OSError as error:  # unwritable output folder, full disk, ...
        print(f"gridattn: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gridattn: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.traceback:
            raise
        print(f"gridattn: internal error ({type(error).__name__}): {one_line(error)}; "
              "run with --traceback and report it", file=sys.stderr)
        return 1
