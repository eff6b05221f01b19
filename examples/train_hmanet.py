"""Train HMANet with the staged recipe: x2 -> x3 -> (x2, x4 from x3) -> fine-tune every scale.

CPU, minutes, no data needed (photos that ship with scikit-image; pip install ".[train]"):
    python examples/train_hmanet.py --preset tiny
with your folders and benchmark sets:
    python examples/train_hmanet.py --preset tiny --data ../shared/data/train --eval ../shared/data/Set5/HR ../shared/data/Set14/HR
the paper's recipe (days on 8 GPUs; launch with torchrun, see docs):
    torchrun --nproc-per-node 8 examples/train_hmanet.py --preset official --data-root /data --eval Set5/HR Set14/HR

Each stage writes <output>/<stage>/last.pt (model, EMA, optimiser, step, RNG) and log.csv; running the same command
again resumes where it stopped. At the end a table gives, per stage and evaluation set, the PSNR / SSIM (Y channel,
MATLAB bicubic LR) of the stage's EMA model and of bicubic upsampling, and the wall time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import time
from pathlib import Path

from gridattn.train import RECIPES, results_table, run_recipe

# colour and grey photographs inside the scikit-image wheel (skimage/data), none smaller than 300 pixels
BUNDLED_TRAIN = ["chelsea.png", "motorcycle_left.png", "motorcycle_right.png", "rocket.jpg", "hubble_deep_field.jpg",
                 "retina.jpg", "ihc.png", "brick.png", "grass.png", "gravel.png", "camera.png", "moon.png"]
BUNDLED_EVAL = ["astronaut.png", "coffee.png"]


def bundled_photos(output: Path) -> tuple[list[str], dict[str, str]]:
    """Copy scikit-image's photos into ``output/photos/{train,eval}``; return (train folders, eval sets)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("no --data given and scikit-image is not installed: pip install 'gridattn[train]' or pass --data")
    source = Path(spec.submodule_search_locations[0]) / "data"
    for part, names in (("train", BUNDLED_TRAIN), ("eval", BUNDLED_EVAL)):
        target = output / "photos" / part
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (source / name).is_file() and not (target / name).is_file():
                shutil.copy(source / name, target / name)
    return [str(output / "photos" / "train")], {"skimage-photos": str(output / "photos" / "eval")}


def main() -> None:
    parser = argparse.ArgumentParser(description="Train HMANet with the staged pre-training recipe.")
    parser.add_argument("--preset", choices=sorted(RECIPES), default="tiny")
    parser.add_argument("--data", nargs="+", help="HR training folders (both pre-training and fine-tuning)")
    parser.add_argument("--data-root", help="official preset: ROOT/imagenet (pre-training) and ROOT/DF2K (fine-tuning)")
    parser.add_argument("--eval", nargs="+", default=[], help="HR benchmark folders evaluated after every stage")
    parser.add_argument("--output", default=None, help="output folder (default runs/<preset>)")
    parser.add_argument("--max-steps", type=int, help="cap on the steps of every stage (milestones scaled alike)")
    parser.add_argument("--numerics", choices=("corrected", "official"), default="corrected")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--resume", action="store_true", help="continue an earlier run in --output "
                        "(without it, a non-empty output folder is refused)")
    parser.add_argument("--scratch-control", metavar="STAGE", help="also train STAGE from random weights "
                        "(same steps and schedule) to measure what its initialisation brings, e.g. x4_from_x3")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()

    recipe = RECIPES[args.preset]
    if args.scratch_control:
        try:
            recipe = recipe.with_scratch_control(args.scratch_control)
        except KeyError as error:
            parser.error(error.args[0])
    output = Path(args.output or f"runs/{args.preset}")
    if output.exists() and any(output.iterdir()) and not args.resume:
        raise SystemExit(f"{output} is not empty: pass --resume to continue that run, or another --output")
    output.mkdir(parents=True, exist_ok=True)
    eval_sets = {Path(folder).parent.name if Path(folder).name == "HR" else Path(folder).name: folder for folder in args.eval}
    if args.data_root:
        root = Path(args.data_root)
        folders = {"pretrain": [str(root / "imagenet")], "finetune": [str(root / "DF2K")]}
    elif args.data:
        folders = {"pretrain": args.data, "finetune": args.data}
    else:
        train_folders, bundled_eval = bundled_photos(output)
        folders = {"pretrain": train_folders, "finetune": train_folders}
        eval_sets = eval_sets or bundled_eval
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"recipe {recipe.name}: {len(recipe.stages)} stages, model preset {recipe.model!r}, numerics {args.numerics}")
    started = time.time()
    results = run_recipe(recipe, folders, str(output), eval_sets=eval_sets, numerics=args.numerics,
                         max_steps=args.max_steps, device=args.device, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print()
        print(results_table(results))
        print(f"\ntotal wall time {time.time() - started:.0f} s; checkpoints in {output}")


if __name__ == "__main__":
    main()
