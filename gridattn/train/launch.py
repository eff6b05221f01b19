"""Running the staged recipe from a command line: ``gridattn train`` and ``examples/train_hmanet.py``.

Both take the same arguments (:func:`add_train_arguments`) and run :func:`launch`. Without ``--data`` the run
trains on photographs that ship inside the scikit-image wheel (``pip install "gridattn[train]"``), so a user
with nothing but the installed package can train.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import time
from pathlib import Path

import torch

from .._arguments import positive_int
from .._errors import InputError
from ..functional.precision import bfloat16_pays
from ..models.registry import architectures
from .recipe import RECIPES, StageResult, results_table, run_recipe

BUNDLED_TRAIN = ("chelsea.png", "motorcycle_left.png", "motorcycle_right.png", "rocket.jpg", "hubble_deep_field.jpg",
                 "retina.jpg", "ihc.png", "brick.png", "grass.png", "gravel.png", "camera.png", "moon.png")
"""Colour and grey photographs inside the scikit-image wheel (``skimage/data``), none smaller than 300 pixels."""
BUNDLED_EVAL = ("astronaut.png", "coffee.png")
"""scikit-image photographs held out for evaluation."""


class LaunchError(InputError):
    """A command line that cannot run (a non-empty output folder without ``--resume``, no data); one line."""


def bundled_photos(output: Path) -> tuple[list[str], dict[str, str]]:
    """Copy scikit-image's photos into ``output/photos/{train,eval}``; return (train folders, eval sets).

    Raises:
        LaunchError: scikit-image is not installed.
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise LaunchError("no --data given and scikit-image is not installed: pip install 'gridattn[train]' "
                          "or pass --data")
    source = Path(spec.submodule_search_locations[0]) / "data"
    for part, names in (("train", BUNDLED_TRAIN), ("eval", BUNDLED_EVAL)):
        target = output / "photos" / part
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (source / name).is_file() and not (target / name).is_file():
                shutil.copy(source / name, target / name)
    return [str(output / "photos" / "train")], {"skimage-photos": str(output / "photos" / "eval")}


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training run's arguments to ``parser`` (``--preset``, ``--data``, ``--eval``, ``--output``, ...)."""
    parser.add_argument("--arch", choices=list(architectures()), default="hmanet",
                        help="architecture to train (default hmanet)")
    parser.add_argument("--preset", choices=sorted(RECIPES), default="tiny", help="recipe (default tiny)")
    parser.add_argument("--data", nargs="+", help="HR training folders (both pre-training and fine-tuning)")
    parser.add_argument("--data-root", help="official preset: ROOT/imagenet (pre-training) and ROOT/DF2K (fine-tuning)")
    parser.add_argument("--eval", nargs="+", default=[], help="HR benchmark folders evaluated after every stage")
    parser.add_argument("--output", default=None,
                        help="output folder (default runs/<preset> for HMANet, runs/<arch>-<preset> otherwise)")
    parser.add_argument("--max-steps", type=positive_int,
                        help="cap on the steps of every stage (milestones scaled alike)")
    parser.add_argument("--numerics", choices=("corrected", "official"), default="corrected")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--float32", action="store_true",
                        help="train in float32 even where bfloat16 autocast pays (gridattn info says where)")
    parser.add_argument("--resume", action="store_true", help="continue an earlier run in --output "
                        "(without it, a non-empty output folder is refused)")
    parser.add_argument("--scratch-control", metavar="STAGE", help="also train STAGE from random weights "
                        "(same steps and schedule) to measure what its initialisation brings, e.g. x4_from_x3")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _eval_name(folder: str) -> str:
    """``Set5/HR`` -> ``Set5``; any other folder by its own name."""
    path = Path(folder)
    return path.parent.name if path.name == "HR" else path.name


def launch(args: argparse.Namespace) -> list[StageResult]:
    """Run the recipe the parsed arguments describe, print the results table and return the results.

    Every stage folder ``<output>/<stage>`` ends with ``model.safetensors`` (the stage's EMA model: pass the
    folder or the file to ``load_model``, ``gridattn evaluate / upscale / export-onnx --checkpoint``) and
    ``last.pt`` (resumable).

    Raises:
        LaunchError: ``--device cuda`` without CUDA, an unknown ``--scratch-control`` stage, a non-empty output
            folder without ``--resume``, no data and no scikit-image.
    """
    if args.device == "cuda" and not torch.cuda.is_available():
        raise LaunchError("--device cuda: CUDA is not available on this machine")
    recipe = RECIPES[args.preset]
    if args.scratch_control:
        try:
            recipe = recipe.with_scratch_control(args.scratch_control)
        except KeyError as error:
            raise LaunchError(error.args[0]) from None
    arch = args.arch
    output = Path(args.output or (f"runs/{args.preset}" if arch == "hmanet" else f"runs/{arch}-{args.preset}"))
    if output.exists() and not output.is_dir():
        raise LaunchError(f"--output {output} is a file, not a folder")
    if output.exists() and any(output.iterdir()) and not args.resume:
        raise LaunchError(f"{output} is not empty: pass --resume to continue that run, or another --output")
    output.mkdir(parents=True, exist_ok=True)
    eval_sets = {_eval_name(folder): folder for folder in args.eval}
    if args.data_root:
        root = Path(args.data_root)
        folders = {"pretrain": [str(root / "imagenet")], "finetune": [str(root / "DF2K")]}
    elif args.data:
        folders = {"pretrain": args.data, "finetune": args.data}
    else:
        train_folders, bundled_eval = bundled_photos(output)
        folders = {"pretrain": train_folders, "finetune": train_folders}
        eval_sets = eval_sets or bundled_eval
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")  # the trainer's default
        precision = "float32" if args.float32 or not bfloat16_pays(device) else "bfloat16 autocast"
        print(f"recipe {recipe.name}: {len(recipe.stages)} stages, {arch} preset {recipe.model!r}, "
              f"numerics {args.numerics}, {precision}", flush=True)
    started = time.time()
    results = run_recipe(recipe, folders, str(output), eval_sets=eval_sets, numerics=args.numerics, arch=arch,
                         max_steps=args.max_steps, device=args.device, progress=not args.quiet, bf16=not args.float32)
    if main:
        print()
        print(results_table(results))
        print(f"\ntotal wall time {time.time() - started:.0f} s; "
              f"each stage's model: {output}/<stage>/model.safetensors")
    return results
