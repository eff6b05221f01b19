"""One trained model of each architecture through every consumer: train a few steps, then evaluate, upscale,
export to ONNX and load it again from the paths the trainer printed (spandrel: tests/test_spandrel.py, in its own
venv)."""

import json
import re

import numpy as np
import pytest
import torch

from gridattn.cli import main
from gridattn.data import imresize, read_image, write_image
from gridattn.inference import upscale
from gridattn.metrics import psnr
from gridattn.models import (
    CheckpointError,
    build_model,
    dat_config,
    get_architecture,
    hat_config,
    load_model,
    swinir_config,
)
from gridattn.models.hmanet import hmanet_config
from gridattn.models.layout import to_layout
from gridattn.train import TrainConfig, train

_MICRO = dict(embed_dim=16, depths=(2,), num_heads=(2,), numerics="official")
MICROS = {
    "hmanet": hmanet_config(2, "tiny").replace(**_MICRO),
    "swinir": swinir_config(2, "tiny").replace(**_MICRO),
    "hat": hat_config(2, "tiny").replace(**_MICRO, squeeze_factor=4),
    "dat": dat_config(2, "tiny").replace(**_MICRO),
}


def _photos(folder, count, size, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3)).astype(np.uint8)
        write_image(folder / f"{i}.png", imresize(coarse, size=(size, size)))


@pytest.fixture(scope="module", params=list(MICROS))
def trained(request, tmp_path_factory):
    """A micro model of each architecture trained 4 steps (official numerics, so that a wrong numerics mode would
    show), with the paths the trainer printed."""
    MICRO = MICROS[request.param]
    root = tmp_path_factory.mktemp("lifecycle")
    _photos(root / "train", 2, 64, 0)
    _photos(root / "Set" / "HR", 2, 40, 1)
    config = TrainConfig(output_dir=str(root / "stage"), model=MICRO, data=(str(root / "train"),), iterations=4,
                         batch_size=2, patch_size=16, lr=2e-3, ema_decay=0.5, checkpoint_every=4, log_every=2,
                         progress=False)
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = train(config)
    match = re.search(r"model \(EMA weights\) (\S+), resumable checkpoint (\S+)", printed.getvalue())
    assert match, printed.getvalue()
    return {"root": root, "model": match.group(1), "checkpoint": match.group(2), "stage": str(root / "stage"),
            "result": result, "config": MICRO}


def test_the_printed_files_hold_the_trained_weights(trained):
    MICRO = trained["config"]
    state = torch.load(trained["checkpoint"], weights_only=True)
    assert state["step"] == 4 and trained["result"]["model"] == trained["model"]
    untrained = build_model(MICRO).state_dict()
    for weights, source in (("ema", trained["model"]), ("ema", trained["stage"]), ("ema", trained["checkpoint"]),
                            ("model", trained["checkpoint"]), ("model", trained["stage"])):
        loaded = load_model(source, weights=weights)
        assert loaded.config == MICRO, (weights, source)
        expected = state[weights]
        assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected), (weights, source)
    # the EMA and the raw weights differ, and both moved away from the initialisation
    assert not torch.equal(state["ema"]["conv_first.weight"], state["model"]["conv_first.weight"])
    assert not torch.equal(state["ema"]["conv_first.weight"], untrained["conv_first.weight"])
    with pytest.raises(CheckpointError, match="weights='model' needs a trainer checkpoint"):
        load_model(trained["model"], weights="model")
    with pytest.raises(ValueError, match="weights must be one of"):
        load_model(trained["model"], weights="raw")


def test_a_folder_that_is_not_a_stage_is_refused(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training stage folder"):
        load_model(tmp_path)
    assert main(["evaluate", "--hr", str(trained["root"] / "Set" / "HR"), "--scale", "2",
                 "--checkpoint", str(tmp_path)]) == 2


def test_evaluate_upscale_and_export_the_trained_model(trained, tmp_path, capsys):
    model = load_model(trained["model"])
    hr_folder = trained["root"] / "Set" / "HR"
    # evaluate the stage folder: the scores of the EMA model, computed independently here
    assert main(["evaluate", "--hr", str(hr_folder), "--scale", "2", "--checkpoint", trained["stage"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = []
    for path in sorted(hr_folder.iterdir()):
        hr = read_image(path)
        expected.append(psnr(upscale(model, imresize(hr, 0.5), dtype="float32"), hr, border=2))
    assert report["psnr"] == pytest.approx(float(np.mean(expected)), abs=1e-9)
    # upscale with the printed model file
    image = trained["root"] / "Set" / "HR" / "0.png"
    assert main(["upscale", str(image), "-o", str(tmp_path / "sr.png"), "--checkpoint", trained["model"],
                 "--quiet"]) == 0
    assert np.array_equal(read_image(tmp_path / "sr.png"), upscale(model, read_image(image)))
    # export the printed trainer checkpoint (EMA weights) and check onnxruntime against the model
    pytest.importorskip("onnxruntime")
    from gridattn.export import read_onnx_metadata, verify_onnx

    assert main(["export-onnx", "--checkpoint", trained["checkpoint"], "-o", str(tmp_path / "m.onnx"),
                 "--size", "16", "24"]) == 0
    assert read_onnx_metadata(tmp_path / "m.onnx")["config"] == trained["config"].to_dict()
    ((_, difference),) = verify_onnx(tmp_path / "m.onnx", model, [(16, 24)])
    assert difference < 1e-5


def test_the_official_code_layout_of_the_trained_model_round_trips(trained):
    """``model.safetensors`` holds the official layout: converting the loaded model back gives the same file."""
    from safetensors.torch import load_file

    stored = load_file(trained["model"])
    model = load_model(trained["model"])
    official = to_layout(model, get_architecture(model.config.arch).layout(None))
    assert set(official) == set(stored) - {"gridattn_config"}
    assert all(torch.equal(official[k], stored[k]) for k in official)


def test_gridattn_train_refuses_what_cannot_run_in_one_line(trained, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    data = str(trained["root"] / "train")
    assert main(["train", "--data", data, "--output", str(occupied), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"gridattn: error: {occupied} is not empty: pass --resume to continue "
                                               "that run, or another --output")
    assert main(["train", "--data", data, "--output", str(tmp_path / "new"), "--scratch-control", "x9"]) == 2
    assert "has no stage 'x9'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", "--data", data, "--output", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--max-steps", "0"])
    assert exit_.value.code == 2 and "must be a positive integer" in capsys.readouterr().err
