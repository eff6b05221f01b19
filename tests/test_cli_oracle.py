"""The command line against an oracle: every generated command line is valid or invalid by construction.

Valid command lines must exit with 0 and write their outputs (checked: files and shapes, or the report);
invalid ones (bad files, folders, checkpoints, flag values, unknown flags and subcommands) must exit with 2 and
print one line ``...: error: ...``. Status 1 (an internal error) is never right. The hypothesis profile sets
the number of command lines (``tests/conftest.py``; ``tools/thorough.sh`` runs thousands).
"""

import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from strategies import at_least
from test_hardening import _bad_files, _png

from gridattn.cli import main
from gridattn.data import imresize, modcrop, read_image, write_image
from gridattn.models import HMANet, hmanet_config, save_hmanet

MULTIPLE = hmanet_config(2, "tiny").pad_multiple  # the x2 checkpoint's tiles are multiples of this
# input image -> shape of its x2 result (16-bit files are read as 8 bits; alpha is kept)
GOOD_IMAGES = {"one-pixel.png": (2, 2, 3), "gray.png": (14, 18), "rgba.png": (14, 18, 4), "gray16.png": (14, 18),
               "rgb16.png": (14, 18, 3), "good.png": (40, 40, 3)}
BAD_IMAGES = ["empty.png", "truncated.png", "text.png", "header-only.png", "bomb.png", "missing.png", "empty"]
GOOD_CHECKPOINTS = ["x2.safetensors", "stage"]  # a file and a training stage folder
BAD_CHECKPOINTS = ["damaged.pth", "text.png", "missing.pth", "empty"]


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    save_hmanet(HMANet(hmanet_config(2, "tiny")), folder / "x2.safetensors")
    (folder / "stage").mkdir()
    shutil.copy(folder / "x2.safetensors", folder / "stage" / "model.safetensors")
    (folder / "damaged.pth").write_bytes(b"PK\x03\x04 not really a zip")
    for name, content in _bad_files(folder).items():
        (folder / name).write_bytes(content)
    rng = np.random.default_rng(1)
    write_image(folder / "one-pixel.png", np.full((1, 1, 3), 128, np.uint8))
    write_image(folder / "gray.png", rng.integers(0, 256, (7, 9)).astype(np.uint8))
    write_image(folder / "rgba.png", rng.integers(0, 256, (7, 9, 4)).astype(np.uint8))
    _png(folder / "gray16.png", rng.integers(0, 65536, (7, 9)).astype(np.uint16))
    _png(folder / "rgb16.png", rng.integers(0, 65536, (7, 9, 3)).astype(np.uint16))
    hr = rng.integers(0, 256, (29, 35, 3)).astype(np.uint8)  # large enough for SSIM at x4 (border 4)
    write_image(folder / "hr" / "a.png", hr)
    write_image(folder / "small_hr" / "a.png", hr[:17, :23])  # too small for SSIM at x3 and x4
    for scale in (2, 3, 4):  # given LR images that fit --scale
        write_image(folder / f"lr_x{scale}" / "a.png", imresize(modcrop(hr, scale), 1 / scale))
    (folder / "empty").mkdir()
    (folder / "blocked").write_text("a file where a folder is expected")
    (folder / "occupied").mkdir()
    (folder / "occupied" / "notes.txt").write_text("an earlier run")
    return folder


def _mostly(rnd: random.Random, good: list, bad: list):
    """One of ``good`` nine times in ten, else one of ``bad``: valid command lines stay common although every
    part of one can be wrong."""
    return rnd.choice(good if rnd.random() < 0.9 else bad)


def _tile_flags(rnd: random.Random, problems: list) -> list:
    """--tile / --tile-overlap, well-formed or not; a tile whose overlap leaves no step is a problem."""
    flags, tile, overlap = [], None, 16
    if rnd.random() < 0.5:
        value = _mostly(rnd, ["1", "8", "16", "33"], ["0", "-3", "x"])
        flags += ["--tile", value]
        if value in ("0", "-3", "x"):
            problems.append(f"--tile {value}")
        else:
            tile = int(value)
    if rnd.random() < 0.5:
        value = _mostly(rnd, ["0", "4", "16", "40"], ["-1", "y"])
        flags += ["--tile-overlap", value]
        if value in ("-1", "y"):
            problems.append(f"--tile-overlap {value}")
        else:
            overlap = int(value)
    if tile is not None:  # tiles are whole multiples; the overlap must leave a step of one multiple or more
        rounded = max(MULTIPLE, tile // MULTIPLE * MULTIPLE)
        if (rounded - overlap) // MULTIPLE * MULTIPLE < MULTIPLE:
            problems.append(f"overlap {overlap} leaves no step in tiles of {rounded}")
    if rnd.random() < 0.3:
        flags.append("--self-ensemble")
    return flags


def _checkpoint(rnd: random.Random, problems: list) -> str:
    name = _mostly(rnd, GOOD_CHECKPOINTS, BAD_CHECKPOINTS)
    if name in BAD_CHECKPOINTS:
        problems.append(f"checkpoint {name}")
    return name


@st.composite
def command_lines(draw):
    """``(argv, problems, outputs)``: the command line (``OUT`` stands for a fresh folder), what makes it
    invalid (empty: valid), and for valid ones the files it must write with their shapes."""
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))  # one stream for all choices: the mix stays as written
    command = rnd.choice(["upscale"] * 4 + ["evaluate"] * 4 + ["info", "export-onnx", "train", "bogus"])
    problems: list[str] = []
    outputs: dict[str, tuple] = {}
    if command == "bogus":
        return ["bogus"], ["unknown subcommand"], outputs
    if command == "info":
        argv = ["info", "--json"] if rnd.random() < 0.5 else ["info"]
    elif command == "upscale":
        inputs = [_mostly(rnd, sorted(GOOD_IMAGES), BAD_IMAGES) for _ in range(rnd.choice([1, 1, 2]))]
        problems += [f"image {name}" for name in inputs if name in BAD_IMAGES]
        output = _mostly(rnd, ["OUT/out", "OUT/out.png"], ["blocked/out.png"])
        if output.startswith("blocked"):
            problems.append("output under a file")
        argv = ["upscale", *inputs, "-o", output, "--checkpoint", _checkpoint(rnd, problems), "--quiet",
                *_tile_flags(rnd, problems)]
        for name in inputs:
            target = output if output.endswith(".png") and len(inputs) == 1 else f"{output}/{Path(name).stem}.png"
            outputs[target] = GOOD_IMAGES.get(name)
    elif command == "evaluate":
        hr = _mostly(rnd, ["hr", "small_hr"], ["empty", "missing", "good.png"])
        scale = _mostly(rnd, ["2", "3", "4"], ["5", "x"])
        if scale not in ("2", "3", "4"):
            problems.append(f"--scale {scale}")
        if hr not in ("hr", "small_hr") or (hr == "small_hr" and scale in ("3", "4")):
            problems.append(f"--hr {hr}")
        argv = ["evaluate", "--hr", hr, "--scale", scale]
        tile_problems: list[str] = []
        tiles = _tile_flags(rnd, tile_problems)
        if rnd.random() < 0.5:
            argv.append("--bicubic")
            problems += [p for p in tile_problems if p.startswith("--")]  # malformed; tiles of no model are unused
        else:
            problems += tile_problems
            argv += ["--checkpoint", _checkpoint(rnd, problems)]
            if scale != "2":
                problems.append("a x2 checkpoint at another scale")
        if rnd.random() < 0.3:
            lr = _mostly(rnd, [f"lr_x{scale}"], ["lr_x2", "lr_x3", "lr_x4", "empty", "missing"])
            argv += ["--lr", lr]
            if lr != f"lr_x{scale}" or hr != "hr":  # the LR folders hold hr/'s image, downscaled
                problems.append(f"--lr {lr}")
        argv += (["--json"] if rnd.random() < 0.5 else []) + tiles
    elif command == "export-onnx":
        opset = "18" if rnd.random() < 0.25 else rnd.choice(["7", "24", "x"])  # few valid exports: seconds each
        size = _mostly(rnd, [["16", "24"]], [["0", "8"], ["a", "8"]])
        problems += [f"--opset {opset}"] * (opset != "18") + [f"--size {size}"] * (size != ["16", "24"])
        argv = ["export-onnx", "--checkpoint", _checkpoint(rnd, problems), "-o", "OUT/m.onnx", "--size", *size,
                "--opset", opset]
        outputs["OUT/m.onnx"] = None
    else:  # train: only refusals here (tests/test_lifecycle.py trains)
        flaw = rnd.choice(["missing data", "occupied output", "output is a file", "unknown stage", "--max-steps 0",
                           "unknown preset"])
        problems.append(flaw)
        argv = {"missing data": ["train", "--data", "missing", "--output", "OUT/run"],
                "occupied output": ["train", "--data", "hr", "--output", "occupied"],
                "output is a file": ["train", "--data", "hr", "--output", "blocked"],
                "unknown stage": ["train", "--data", "hr", "--output", "OUT/run", "--scratch-control", "x9"],
                "--max-steps 0": ["train", "--max-steps", "0"],
                "unknown preset": ["train", "--preset", "huge"]}[flaw] + ["--quiet"]
    if rnd.random() < 0.05:
        argv.append("--frobnicate")
        problems.append("unknown flag")
    return argv, problems, outputs


def _run(argv: list) -> tuple[int, str, str]:
    """(status, stdout, stderr) of the command line in this process; usage errors exit through SystemExit."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def _check_outcome(argv, problems, outputs, status, stdout, stderr, folder: Path) -> None:
    """The oracle: valid -> 0 and the outputs; invalid -> 2 and one line; never 1."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if problems:
        assert status == 2, f"{argv}: invalid ({problems}) but exit status {status}: {stderr}"
        assert len(lines) == 1 and ": error: " in lines[0] and lines[0].startswith("gridattn"), (argv, stderr)
        return
    assert status == 0, f"{argv}: valid but exit status {status}: {stderr}"
    assert "error" not in stderr, (argv, stderr)
    for path, shape in outputs.items():
        target = folder / path
        assert target.is_file(), f"{argv}: {path} was not written"
        if shape is not None:
            assert read_image(target).shape == shape, (argv, path)
    if argv[0] == "evaluate":
        report = json.loads(stdout) if "--json" in argv else None
        assert report["images"] == 1 if report else "| mean" in stdout, (argv, stdout)


@settings(max_examples=at_least(25), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=command_lines())
def test_command_lines_against_the_oracle(cli_files, case, monkeypatch):
    argv, problems, outputs = case
    event(f"{argv[0]} {'invalid' if problems else 'valid'}")  # --hypothesis-show-statistics shows the mix
    monkeypatch.chdir(cli_files)
    with tempfile.TemporaryDirectory(dir=cli_files) as fresh:
        name = Path(fresh).name
        argv = [a.replace("OUT", name) for a in argv]
        outputs = {path.replace("OUT", name): shape for path, shape in outputs.items()}
        status, stdout, stderr = _run(argv)
        _check_outcome(argv, problems, outputs, status, stdout, stderr, cli_files)


def test_the_oracle_fails_a_command_line_that_answers_2_to_everything(cli_files):
    """Negative control: the old acceptance ("0 or 2") let a valid command line fail with 2; the oracle
    does not, and it does not accept a silent success without the output either."""
    argv = ["upscale", "gray.png", "-o", "x.png", "--checkpoint", "x2.safetensors"]
    with pytest.raises(AssertionError, match="valid but exit status 2"):
        _check_outcome(argv, [], {"x.png": (14, 18)}, 2, "", "gridattn: error: something\n", cli_files)
    with pytest.raises(AssertionError, match="was not written"):
        _check_outcome(argv, [], {"x.png": (14, 18)}, 0, "", "", cli_files)
    with pytest.raises(AssertionError, match="invalid"):
        _check_outcome(argv, ["image"], {}, 1, "", "gridattn: internal error (ValueError): x\n", cli_files)


def test_an_internal_value_error_is_not_reported_as_a_user_error(cli_files, monkeypatch):
    """A ValueError from a bug (not an InputError about the user's files or flags) exits with 1."""
    import gridattn.cli

    def broken(*args, **kwargs):
        raise ValueError("simulated bug")

    monkeypatch.setattr(gridattn.cli, "upscale", broken)
    monkeypatch.chdir(cli_files)
    status, _, stderr = _run(["upscale", "gray.png", "-o", "y.png", "--checkpoint", "x2.safetensors", "--quiet"])
    assert status == 1 and stderr.startswith("gridattn: internal error (ValueError): simulated bug"), stderr


def test_command_line_outputs_for_special_images(cli_files, tmp_path):
    for name, shape in GOOD_IMAGES.items():
        target = tmp_path / f"{name}.out.png"
        status, _, stderr = _run(["upscale", cli_files / name, "-o", target, "--checkpoint",
                                  cli_files / "x2.safetensors", "--quiet"])
        assert status == 0, stderr
        assert read_image(target).shape == shape


def test_unexpected_errors_are_one_line_unless_traceback_is_asked(monkeypatch, capsys):
    import gridattn.info

    def broken():
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(gridattn.info, "collect_info", broken)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("gridattn: internal error (RuntimeError): simulated bug; second line; "
                           "run with --traceback and report it")
    with pytest.raises(RuntimeError, match="simulated bug"):
        main(["--traceback", "info"])


@pytest.mark.parametrize("argv, status", [
    (["info"], 0),
    (["upscale", "text.png", "-o", "z.png", "--checkpoint", "x2.safetensors"], 2),
    (["evaluate", "--hr", "hr", "--scale", "2", "--bicubic", "--frobnicate"], 2),
    (["train", "--data", "missing", "--output", "blocked"], 2),
])
def test_the_installed_command_prints_no_traceback(cli_files, argv, status):
    """In a real process (what a user runs), where a traceback printed by anything would show."""
    done = subprocess.run([sys.executable, "-m", "gridattn", *argv], cwd=cli_files, capture_output=True, text=True)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    if status == 2:
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
