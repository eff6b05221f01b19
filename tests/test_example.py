"""Smoke run of examples/train_hmanet.py: every stage of the tiny recipe, one step each, on small images."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from gridattn.data import imresize, write_image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_hmanet.py"


def _photos(folder: Path, count: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3)).astype(np.uint8)
        write_image(folder / f"{i}.png", imresize(coarse, size=(size, size)))


def test_tiny_recipe_smoke_run_resumes_and_prints_the_table(tmp_path):
    _photos(tmp_path / "train", 3, 136, 0)
    _photos(tmp_path / "Set" / "HR", 2, 48, 1)
    command = [sys.executable, EXAMPLE, "--preset", "tiny", "--max-steps", "1", "--quiet", "--output", tmp_path / "run",
               "--data", tmp_path / "train", "--eval", tmp_path / "Set" / "HR"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| x")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "x2_pretrain", "x3_pretrain", "x2_from_x3", "x4_from_x3", "x2_finetune", "x3_finetune", "x4_finetune"]
    assert all("| Set |" in row for row in rows)
    assert "skipped reconstruction.upsample.0.weight: upsampler" in result.stdout
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
