"""How much does tiled inference change the result of a model with global (grid) attention?

Trains a tiny HMANet briefly on a folder of HR images (random crops, LR made with the MATLAB bicubic), or
loads --checkpoint, then compares whole-image inference with tiled inference on benchmark folders: PSNR
against HR for both, and PSNR of the tiled result against the whole-image result.

    python benchmarks/tiling_effect.py --train ../shared/data/train \
        --eval ../shared/data/Set5/HR ../shared/data/Set14/HR

The short training loop here only serves this measurement (the library's trainer is gridattn.train).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gridattn.data import imresize, list_images, modcrop, read_image
from gridattn.inference import upscale
from gridattn.metrics import psnr
from gridattn.models import HMANet, hmanet_config, load_hmanet, save_hmanet


def train(folders: list[str], scale: int, iterations: int, patch: int, batch: int, seed: int) -> HMANet:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = [read_image(p) for folder in folders for p in list_images(folder)]
    images = [im for im in images if im.ndim == 3]
    model = HMANet(hmanet_config(scale, "tiny")).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    hr_patch = patch * scale
    start = time.time()
    for step in range(1, iterations + 1):
        crops = []
        for _ in range(batch):
            im = images[rng.integers(len(images))]
            top, left = rng.integers(im.shape[0] - hr_patch + 1), rng.integers(im.shape[1] - hr_patch + 1)
            crops.append(im[top:top + hr_patch, left:left + hr_patch])
        hr = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
        lr = imresize(hr, 1 / scale).clamp(0, 1)
        loss = (model(lr) - hr).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            print(f"step {step}/{iterations}  L1 {loss.item():.4f}  {time.time() - start:.0f} s", flush=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="*", default=[], help="folders of HR training images")
    parser.add_argument("--checkpoint", help="use this model instead of training one")
    parser.add_argument("--save", help="save the trained model here")
    parser.add_argument("--eval", nargs="+", required=True, help="folders of HR benchmark images")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--tiles", type=int, nargs="+", default=[32, 48, 64, 96])
    parser.add_argument("--overlaps", type=int, nargs="+", default=[8, 16, 32])
    args = parser.parse_args()
    if args.checkpoint:
        model = load_hmanet(args.checkpoint)
    else:
        model = train(args.train, args.scale, args.iterations, patch=32, batch=8, seed=0)
        if args.save:
            save_hmanet(model, args.save)
    scale = model.config.scale
    pairs = [(modcrop(read_image(p), scale), p.name) for folder in args.eval for p in list_images(folder)]
    pairs = [(hr[..., :3] if hr.ndim == 3 else hr, name) for hr, name in pairs]
    lrs = [imresize(hr, 1 / scale) for hr, _ in pairs]
    whole = [upscale(model, lr) for lr in lrs]
    base = np.mean([psnr(sr, hr, border=scale) for sr, (hr, _) in zip(whole, pairs)])
    bicubic = np.mean([psnr(imresize(lr, scale), hr, border=scale) for lr, (hr, _) in zip(lrs, pairs)])
    print(f"\n{len(pairs)} images, x{scale}: bicubic {bicubic:.3f} dB, whole-image model {base:.3f} dB\n")
    print("| tile | overlap | PSNR vs HR (dB) | change (dB) | PSNR tiled vs whole (dB) | max abs diff (levels) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for tile in args.tiles:
        for overlap in args.overlaps:
            if overlap >= tile:
                continue
            tiled = [upscale(model, lr, tile=tile, tile_overlap=overlap) for lr in lrs]
            score = np.mean([psnr(sr, hr, border=scale) for sr, (hr, _) in zip(tiled, pairs)])
            agree = np.mean([min(psnr(t, w, border=scale), 99.0) for t, w in zip(tiled, whole)])
            diff = max(int(np.abs(t.astype(int) - w).max()) for t, w in zip(tiled, whole))
            print(f"| {tile} | {overlap} | {score:.3f} | {score - base:+.3f} | {agree:.2f} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
