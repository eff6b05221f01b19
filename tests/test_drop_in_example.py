"""examples/drop_in_attention.py: both denoisers train, the attention layers are in the graph, and a --quick run
writes finite PSNRs for the noisy input and both variants."""

import copy
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gridattn import GridAttention, WindowAttention
from gridattn.data import imresize, write_image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "drop_in_attention.py"


@pytest.fixture(scope="module")
def example():
    # one thread: these models are small, and on a CPU shared with other jobs two threads ran 2-3x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("drop_in_attention", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    torch.set_num_threads(threads)


def _photos(folder: Path, count: int, size: tuple[int, int], seed: int) -> None:
    """Smooth random colour images (coarse noise upscaled), so a denoiser has structure to keep."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3)).astype(np.uint8)
        write_image(folder / f"{i}.png", imresize(coarse, size=size))


def test_variants_differ_only_in_the_middle_stage_and_match_in_parameters(example):
    models = example.build_models(32, seed=0)
    conv, attention = models["conv"], models["attention"]
    layers = {type(m) for m in attention.middle.modules()}
    assert {WindowAttention, GridAttention} <= layers
    assert not {WindowAttention, GridAttention} & {type(m) for m in conv.modules()}
    # same seed: identical weights outside the middle stage
    shared = {k: v for k, v in conv.state_dict().items() if not k.startswith("middle.")}
    assert all(torch.equal(v, attention.state_dict()[k]) for k, v in shared.items())
    total = example.count_parameters
    assert abs(total(conv) - total(attention)) <= 0.01 * total(attention)
    # both middle stages start as the identity, so both variants start as the same function
    x = torch.rand(1, 3, 21, 27)
    with torch.no_grad():
        assert torch.equal(conv(x), attention(x))


def test_both_variants_fit_a_fixed_batch_and_every_parameter_learns(example):
    torch.manual_seed(0)
    clean = torch.rand(2, 3, 4, 4).repeat_interleave(8, -1).repeat_interleave(8, -2)  # (2, 3, 32, 32), blocky
    noisy = clean + 25 / 255 * torch.randn_like(clean)
    # odd size (29 x 31, no multiple of the window or interval): the attention layers must pad and crop
    clean, noisy = clean[..., :29, :31], noisy[..., :29, :31]
    for name, model in example.build_models(16, seed=0).items():
        before = copy.deepcopy(model.state_dict())
        losses, seconds = example.train(model, iter([(noisy, clean)] * 12), 12, lr=2e-3)
        assert len(losses) == 12 and seconds > 0
        assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), (name, losses)
        frozen = [k for k, v in model.state_dict().items() if torch.equal(v, before[k])]
        assert not frozen, f"{name}: parameters that never changed: {frozen}"


def test_quick_run_writes_finite_psnrs_for_noisy_input_and_both_variants(example, tmp_path):
    _photos(tmp_path / "train", 3, (64, 72), 0)
    _photos(tmp_path / "Set" / "HR", 2, (40, 56), 1)
    output = tmp_path / "results.json"
    returned = example.main(["--quick", "--data", str(tmp_path / "train"), "--eval", str(tmp_path / "Set" / "HR"),
                             "--output", str(output)])
    results = json.loads(output.read_text())
    assert results["psnr"] == returned["psnr"]
    row = results["psnr"]["Set"]  # a folder named HR is scored under its parent's name
    assert row["images"] == 2 and set(row) == {"images", "noisy", "conv", "attention"}
    assert all(math.isfinite(row[key]) and 5 < row[key] < 60 for key in ("noisy", "conv", "attention"))
    assert 19 < row["noisy"] < 23  # sigma 25/255 (clipped to [0, 1]) is about 20-21 dB
    for name in ("conv", "attention"):
        stats = results["models"][name]
        assert len(stats["losses"]) == 4 and all(math.isfinite(x) for x in stats["losses"])
        assert stats["parameters"] > 0 and stats["seconds_per_step"] > 0
