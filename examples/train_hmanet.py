"""Train HMANet with the staged recipe: x2 -> x3 -> (x2, x4 from x3) -> fine-tune every scale.

CPU, minutes, no data needed (photos that ship with scikit-image; pip install ".[train]"):
    python examples/train_hmanet.py --preset tiny
with your folders and benchmark sets:
    python examples/train_hmanet.py --preset tiny --data ../shared/data/train \
        --eval ../shared/data/Set5/HR ../shared/data/Set14/HR
the paper's recipe (days on 8 GPUs; launch with torchrun, see docs):
    torchrun --nproc-per-node 8 examples/train_hmanet.py --preset official --data-root /data --eval Set5/HR Set14/HR

Each stage writes <output>/<stage>/model.safetensors (its EMA model: give the folder or the file to load_hmanet or to
`gridattn evaluate / upscale / export-onnx --checkpoint`), last.pt (model, EMA, optimiser, step, RNG) and log.csv;
running the same command with --resume continues where it stopped. `gridattn train` takes the same arguments.
At the end a table gives, per stage and evaluation set, the PSNR / SSIM (Y channel, MATLAB bicubic LR) of the
stage's EMA model and of bicubic upsampling, and the wall time.
"""

from __future__ import annotations

import argparse

from gridattn.train.launch import LaunchError, add_train_arguments, launch


def main() -> None:
    parser = add_train_arguments(
        argparse.ArgumentParser(description="Train HMANet with the staged pre-training recipe.")
    )
    args = parser.parse_args()
    try:
        launch(args)  # every stage, then the table of PSNR / SSIM against bicubic
    except LaunchError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
