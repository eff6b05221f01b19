"""Drop GridAttention and WindowAttention into your own model: a small residual denoiser, with and without them.

Two models that differ in one stage are trained with the same seed, steps, crops and noise:

* ``attention``: conv stages, then an attention stage (window attention + grid attention, each followed by an
  MLP, pre-norm residuals) on the channels-last map, then conv stages;
* ``conv``: the same model with that stage replaced by a residual conv block of the same parameter count, so
  the comparison asks "is attention a better use of these parameters than one more conv block?" rather than
  "do more parameters help?" (which removing the stage would also measure).

Both predict the noise (DnCNN's residual learning) of additive Gaussian noise (sigma 25/255, clipped to [0, 1]
like a noisy photo saved to a file) on random crops of photographs, and are scored by RGB PSNR on whole held-out
images.

CPU, minutes, no data needed (photos that ship with scikit-image; pip install ".[train]"):
    python examples/drop_in_attention.py
with your folders:
    python examples/drop_in_attention.py --data path/to/train --eval path/to/Set5/HR path/to/Set14/HR
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gridattn import GridAttention, Mlp, PreNorm, WindowAttention
from gridattn.data import list_images, read_image
from gridattn.inference import upscale
from gridattn.metrics import psnr

# photographs inside the scikit-image wheel (skimage/data); the two evaluation photos are never trained on
BUNDLED_TRAIN = ["chelsea.png", "motorcycle_left.png", "motorcycle_right.png", "rocket.jpg", "hubble_deep_field.jpg",
                 "retina.jpg", "ihc.png", "brick.png", "grass.png", "gravel.png", "camera.png", "moon.png"]
BUNDLED_EVAL = ["astronaut.png", "coffee.png"]


# --------------------------------------------------------------------------------------------- the models


def zero_(layer: nn.Module) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class AttentionStage(nn.Module):
    """Window attention (local, inside ``window_size`` x ``window_size`` tiles) then grid attention (global,
    among pixels ``interval`` apart), each followed by an MLP; every sub-layer is a pre-norm residual
    ``x + f(LN(x))``.

    Takes and returns ``(B, C, H, W)`` like the convolutions around it; the gridattn layers work on channels-last
    ``(B, H, W, C)`` maps of any height and width (they pad and mask internally), so the stage only permutes.
    """

    def __init__(self, dim: int, num_heads: int = 4, window_size: int = 8, interval: int = 8) -> None:
        super().__init__()
        window, grid = WindowAttention(dim, num_heads, window_size), GridAttention(dim, num_heads, interval)
        mlps = Mlp(dim, 2 * dim), Mlp(dim, 2 * dim)
        self.layers = nn.Sequential(PreNorm(dim, window), PreNorm(dim, mlps[0]),
                                    PreNorm(dim, grid), PreNorm(dim, mlps[1]))
        # Zero the last projection of every residual branch: the stage starts as the identity, so it does not
        # scramble the features of the layers around it at initialisation (randomly initialised, in a 40-step
        # trial the attention model started at 3.6x the conv model's loss and ended 1.9x above it).
        for last in (window.proj, mlps[0].fc2, grid.proj, mlps[1].fc2):
            zero_(last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C): LayerNorm and the attention layers act on C last
        return self.layers(x).permute(0, 3, 1, 2)  # back to (B, C, H, W) for the convolutions


class ConvBlock(nn.Module):
    """``x + conv(ReLU(conv(x)))`` with 3x3 convolutions through ``hidden`` channels; ``identity_init`` zeroes
    the last convolution, so that the block starts as the identity."""

    def __init__(self, dim: int, hidden: int | None = None, identity_init: bool = False) -> None:
        super().__init__()
        hidden = hidden or dim
        self.body = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, dim, 3, padding=1))
        if identity_init:
            zero_(self.body[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def matched_conv_block(dim: int, parameters: int) -> ConvBlock:
    """The ConvBlock whose hidden width brings its parameter count closest to ``parameters`` (a block has
    ``hidden * (18 dim + 1) + dim`` parameters), starting as the identity like the attention stage: both
    variants then start as the same function."""
    return ConvBlock(dim, max(1, round((parameters - dim) / (18 * dim + 1))), identity_init=True)


class Denoiser(nn.Module):
    """conv -> 2 ConvBlocks -> ``middle`` -> 2 ConvBlocks -> conv; returns the input minus the predicted noise."""

    def __init__(self, dim: int, middle: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, dim, 3, padding=1)
        self.before = nn.Sequential(ConvBlock(dim), ConvBlock(dim))
        self.after = nn.Sequential(ConvBlock(dim), ConvBlock(dim))
        self.tail = nn.Conv2d(dim, 3, 3, padding=1)
        # built last, so that under the same seed both variants start with the same weights everywhere else
        self.middle = middle()

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        features = self.after(self.middle(self.before(self.head(noisy))))
        return noisy - self.tail(features)


def build_models(dim: int, seed: int) -> dict[str, Denoiser]:
    attention_params = count_parameters(AttentionStage(dim))
    models = {}
    for name, middle in (("conv", lambda: matched_conv_block(dim, attention_params)),
                         ("attention", lambda: AttentionStage(dim))):
        torch.manual_seed(seed)
        models[name] = Denoiser(dim, middle)
    return models


# ----------------------------------------------------------------------------------------------- the data


def bundled_photos() -> tuple[list[Path], dict[str, list[Path]]]:
    """(training photos, {"skimage-photos": evaluation photos}) from the scikit-image wheel."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("no --data / --eval given and scikit-image is not installed: "
                         "pip install 'gridattn[train]' or pass --data and --eval")
    source = Path(spec.submodule_search_locations[0]) / "data"
    train = [source / name for name in BUNDLED_TRAIN if (source / name).is_file()]
    return train, {"skimage-photos": [source / name for name in BUNDLED_EVAL if (source / name).is_file()]}


def load_rgb(path: Path) -> torch.Tensor:
    """A photo as float ``(3, H, W)`` in [0, 1]; grayscale repeated to three channels, alpha dropped."""
    image = read_image(path)
    image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def noisy_crops(images: list[torch.Tensor], steps: int, batch: int, crop: int, sigma: float,
                seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of (noisy, clean) random crops with random flips / 90-degree rotations. A private
    generator makes the sequence a function of ``seed`` alone, so both models see exactly the same batches."""
    images = [image for image in images if min(image.shape[1:]) >= crop]
    if not images:
        raise SystemExit(f"no training image is at least {crop} pixels on both sides: lower --crop")
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        clean = []
        for index in torch.randint(len(images), (batch,), generator=generator).tolist():
            image = images[index]
            top = int(torch.randint(image.shape[1] - crop + 1, (1,), generator=generator))
            left = int(torch.randint(image.shape[2] - crop + 1, (1,), generator=generator))
            patch = image[:, top:top + crop, left:left + crop]
            rotations, flip = torch.randint(4, (2,), generator=generator).tolist()
            patch = torch.rot90(patch, rotations, (1, 2))
            clean.append(patch.flip(2) if flip % 2 else patch)
        clean_batch = torch.stack(clean)
        noise = sigma * torch.randn(clean_batch.shape, generator=generator)
        yield (clean_batch + noise).clamp(0, 1), clean_batch  # clipped, like a noisy photo saved to a file


# ---------------------------------------------------------------------------------- training and scoring


def train(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int,
          lr: float = 2e-3) -> tuple[list[float], float]:
    """MSE (the loss PSNR measures), Adam, cosine decay; returns (loss per step, seconds per step)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    losses = []
    started = time.perf_counter()
    for noisy, clean in batches:
        loss = nn.functional.mse_loss(model(noisy), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if len(losses) % max(1, steps // 5) == 0:
            print(f"  step {len(losses)}/{steps}: loss {np.mean(losses[-10:]):.5f}", flush=True)
    return losses, (time.perf_counter() - started) / max(1, len(losses))


def evaluate(models: dict[str, nn.Module], images: list[torch.Tensor], sigma: float, seed: int,
             tile: int | None) -> dict[str, float]:
    """Mean RGB PSNR over whole images of the noisy input and of every model; each image gets one fixed noise
    draw, shared by all models. The models run on overlapping tiles of ``tile`` pixels (any size: the attention
    layers pad and mask); ``upscale`` takes any image-to-image model, here one of scale 1. Tiles bound the cost of
    grid attention, which grows with the square of the image area, and keep its groups near the training size."""
    scores: dict[str, list[float]] = {"noisy": []} | {name: [] for name in models}
    for index, clean in enumerate(images):
        generator = torch.Generator().manual_seed(seed + index)
        noisy = (clean + sigma * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
        scores["noisy"].append(psnr(noisy, clean, y_only=False))
        for name, model in models.items():  # upscale runs the model in eval mode without gradients
            scores[name].append(psnr(upscale(model, noisy, tile=tile, tile_overlap=16), clean, y_only=False))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="A denoiser with and without gridattn's attention stage.")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each model")
    parser.add_argument("--crop", type=int, default=48, help="training crop size in pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=32, help="channels of every stage")
    parser.add_argument("--sigma", type=float, default=25.0, help="noise standard deviation in 8-bit levels")
    parser.add_argument("--tile", type=int, default=128, help="evaluation tile size in pixels, 0 for whole images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", nargs="+", help="training image folders (default: photos bundled with scikit-image)")
    parser.add_argument("--eval", nargs="+", help="held-out image folders, one score per folder (default: bundled "
                        "photos not used for training)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's choice); 1 can be much faster "
                        "on a CPU shared with other jobs")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 steps, crops of 32, batch 2")
    parser.add_argument("--output", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.crop, args.batch = 4, 32, 2
    sigma = args.sigma / 255
    if args.threads:
        torch.set_num_threads(args.threads)

    bundled_train, bundled_eval = bundled_photos() if not (args.data and args.eval) else ([], {})
    train_files = list_images(*args.data) if args.data else bundled_train
    eval_sets = {Path(folder).parent.name if Path(folder).name.upper() == "HR" else Path(folder).name:
                 list_images(folder) for folder in args.eval} if args.eval else bundled_eval
    train_images = [load_rgb(path) for path in train_files]
    print(f"training on {len(train_images)} images, {args.steps} steps of {args.batch} crops of {args.crop}, "
          f"sigma {args.sigma:g}/255, seed {args.seed}, {torch.get_num_threads()} threads")

    models = build_models(args.dim, args.seed)
    results: dict = {"args": vars(args), "models": {}, "psnr": {}}
    for name, model in models.items():
        print(f"training {name}", flush=True)
        batches = noisy_crops(train_images, args.steps, args.batch, args.crop, sigma, args.seed)
        losses, seconds = train(model, batches, args.steps)
        tail = losses[-max(1, len(losses) // 10):]  # the last tenth of the losses, less noisy than the last one
        results["models"][name] = {"parameters": count_parameters(model), "seconds_per_step": seconds,
                                   "first_loss": losses[0], "final_loss": float(np.mean(tail)), "losses": losses}
        print(f"{name:9s} {count_parameters(model):,} parameters, {seconds:.3f} s/step, "
              f"loss {losses[0]:.5f} -> {np.mean(tail):.5f} (PSNR {-10 * math.log10(np.mean(tail)):.2f} dB on crops)")

    for set_name, files in eval_sets.items():
        started = time.perf_counter()
        results["psnr"][set_name] = evaluate(models, [load_rgb(path) for path in files], sigma, args.seed,
                                             args.tile or None)
        results["psnr"][set_name]["images"] = len(files)
        print(f"evaluated {set_name} ({len(files)} images) in {time.perf_counter() - started:.0f} s")

    print("\n| set | images | noisy | conv (no attention) | attention | attention - conv |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for set_name, row in results["psnr"].items():
        print(f"| {set_name} | {row['images']} | {row['noisy']:.2f} | {row['conv']:.2f} | {row['attention']:.2f} "
              f"| {row['attention'] - row['conv']:+.2f} |")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
