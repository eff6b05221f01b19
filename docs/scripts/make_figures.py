"""Figures of the documentation site, drawn with matplotlib from gridattn's own code.

Regenerate everything (from the repository root, with gridattn and matplotlib installed):

    python docs/scripts/make_figures.py all --run runs/tiny --hr ../shared/data/Set14/HR \
        --eval ../shared/data/Set5/HR --scores /tmp/tiny-scores.json

or one figure at a time:

    python docs/scripts/make_figures.py attention      # docs/images/attention-windows.png, attention-padding.png
    python docs/scripts/make_figures.py architecture   # docs/images/hmanet-architecture.png
    python docs/scripts/make_figures.py crops --run runs/tiny --hr ../shared/data/Set14/HR --image zebra
                                                       # docs/images/crop-comparison.png
    python docs/scripts/make_figures.py curves --run runs/tiny --eval ../shared/data/Set5/HR \
        --scores /tmp/tiny-scores.json                 # docs/images/training-curves.png

``--run`` is the output folder of ``python examples/train_hmanet.py --preset tiny --output runs/tiny`` (one
sub-folder per stage holding ``last.pt`` and ``log.csv``; the docs' images come from the run with
``--data ../shared/data/train --scratch-control x4_from_x3``). ``--eval`` scores every stage's EMA model (minutes
on a CPU); ``--scores`` caches those scores in a JSON file (read when it exists). Nothing is drawn by hand:

* attention: the tokens a query attends to are read off ``pad_to_multiple`` -> ``torch.roll`` ->
  ``window_partition`` / ``grid_partition`` of a map of token coordinates and the rows of
  ``window_attention_mask`` / ``grid_attention_mask``, exactly the path of ``WindowAttention`` and
  ``GridAttention``; the script then checks the set against the real layers (the gradient of the query's output
  is non-zero exactly on the tokens it attends to) and stops if they disagree;
* architecture: the boxes come from walking a real ``HMANet`` instance (class names, hyper-parameters and
  parameter counts read from its modules, shapes recorded by forward hooks during one forward pass);
* crops and curves: the stages' EMA weights from ``last.pt``, ``gridattn.inference.upscale``,
  ``gridattn.data.imresize`` (MATLAB bicubic), ``gridattn.metrics.psnr`` and the stages' ``log.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import patches  # noqa: E402

IMAGES = Path(__file__).resolve().parent.parent / "images"
DPI = 110

# ---------------------------------------------------------------------------------------------------------------
# attention: which tokens one query attends to
# ---------------------------------------------------------------------------------------------------------------

QUERY, ATTENDED, MASKED_REAL, OUTSIDE, PADDING = range(5)
CELL_COLORS = {
    QUERY: "#c0392b",
    ATTENDED: "#5dade2",
    MASKED_REAL: "#fdebd0",
    OUTSIDE: "#ffffff",
    PADDING: "#e5e8e8",
}
HATCHES = {MASKED_REAL: "////", PADDING: "xx"}
HATCH_COLORS = {MASKED_REAL: "#e59866", PADDING: "#aab7b8"}


def _coordinate_map(height: int, width: int, multiple: int):
    """``(1, H', W', 3)``: per cell of the padded map its token id + 1 (0 for padding), row and column.

    The id channel is padded by ``pad_to_multiple`` (zero padding, as the layers pad), so padding is what the
    library's padding produces; row and column are the cell's place on the padded map."""
    from gridattn.functional import pad_to_multiple, padded_size

    ids = torch.arange(1, height * width + 1, dtype=torch.float64).view(1, height, width, 1)
    ids = pad_to_multiple(ids, multiple)
    padded_h, padded_w = padded_size(height, width, multiple)
    assert ids.shape[1:3] == (padded_h, padded_w)
    rows, cols = torch.meshgrid(torch.arange(padded_h, dtype=torch.float64),
                                torch.arange(padded_w, dtype=torch.float64), indexing="ij")
    return torch.cat([ids, rows[None, :, :, None], cols[None, :, :, None]], dim=-1)


def attended_tokens(kind: str, height: int, width: int, query: tuple[int, int], *, window: int = 8, shift: int = 0,
                    interval: int = 4) -> dict:
    """The query's group (window, shifted window or interval grid) and which of its tokens the mask lets it see.

    ``kind``: ``"window"`` (W-MSA / SW-MSA, ``shift``) or ``"grid"`` (Grid-MSA, ``interval``). Follows the
    layers: pad at the bottom/right to a multiple, roll by ``-shift``, partition, then the mask row of the
    query. Returns the padded size, a ``(H', W')`` map of group ids (for drawing group boundaries), and the
    cells (row, col on the padded map) of the group, split into attended, masked real and padding."""
    from gridattn.functional import grid_attention_mask, grid_partition, window_attention_mask, window_partition

    multiple = window if kind == "window" else interval
    cells = _coordinate_map(height, width, multiple)
    padded_h, padded_w = cells.shape[1:3]
    if kind == "window":
        rolled = torch.roll(cells, shifts=(-shift, -shift), dims=(1, 2)) if shift else cells
        groups = window_partition(rolled, window).flatten(1, 2)  # (windows, N, 3)
        mask = window_attention_mask(height, width, window, shift, dtype=torch.float64)
    else:
        groups = grid_partition(cells, interval).flatten(1, 2)  # (groups, N, 3)
        mask = grid_attention_mask(height, width, interval, dtype=torch.float64)
    query_id = query[0] * width + query[1] + 1
    where = (groups[..., 0] == query_id).nonzero()
    assert len(where) == 1, where
    group, position = where[0].tolist()
    allowed = torch.ones(groups.shape[1], dtype=torch.bool) if mask is None else mask[group, position] == 0
    group_ids = torch.full((padded_h, padded_w), -1, dtype=torch.long)
    for g in range(groups.shape[0]):
        group_ids[groups[g, :, 1].long(), groups[g, :, 2].long()] = g
    members = groups[group]
    out = {"padded": (padded_h, padded_w), "group_ids": group_ids.numpy(), "group": group,
           "attended": [], "masked_real": [], "masked_padding": [], "members": []}
    for (token_id, row, col), ok in zip(members.tolist(), allowed.tolist()):
        cell = (int(row), int(col))
        out["members"].append(cell)
        if ok:
            assert token_id > 0, "a real query must never attend to padding"
            out["attended"].append(cell)
        else:
            out["masked_padding" if token_id == 0 else "masked_real"].append(cell)
    return out


def _gradient_support(layer: torch.nn.Module, height: int, width: int, query: tuple[int, int]) -> set:
    """Tokens whose input changes the layer's output at ``query`` (random weights, float64)."""
    torch.manual_seed(0)
    layer = layer.double().eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(1, height, width, layer.in_dim, dtype=torch.float64, requires_grad=True)
    layer(x)[0, query[0], query[1]].sum().backward()
    support = (x.grad[0].abs().sum(-1) > 0).nonzero().tolist()
    return {tuple(cell) for cell in support}


def check_against_layers(kind: str, height: int, width: int, query, result, *, window=8, shift=0, interval=4) -> None:
    """Stop unless the real layer's output at ``query`` depends exactly on the tokens drawn as attended."""
    from gridattn import GridAttention, WindowAttention

    if kind == "window":
        layer = WindowAttention(8, 2, window, shift)
    else:
        layer = GridAttention(8, 2, interval)
    drawn = set(result["attended"])
    support = _gradient_support(layer, height, width, query)
    if support != drawn:
        raise SystemExit(f"{kind} {height}x{width} query {query}: drawn {sorted(drawn - support)} extra, "
                         f"{sorted(support - drawn)} missing against the layer's gradient")


def _group_outline(ax, group_ids: np.ndarray, group: int, **style) -> None:
    """Outline the cells of one group (drawn segment by segment, so a wrapped window shows its pieces)."""
    inside = group_ids == group
    h, w = inside.shape
    for r in range(h):
        for c in range(w):
            if not inside[r, c]:
                continue
            if r == 0 or not inside[r - 1, c]:
                ax.plot([c, c + 1], [r, r], **style)
            if r == h - 1 or not inside[r + 1, c]:
                ax.plot([c, c + 1], [r + 1, r + 1], **style)
            if c == 0 or not inside[r, c - 1]:
                ax.plot([c, c], [r, r + 1], **style)
            if c == w - 1 or not inside[r, c + 1]:
                ax.plot([c + 1, c + 1], [r, r + 1], **style)


def _group_boundaries(ax, group_ids: np.ndarray, **style) -> None:
    """Lines between neighbouring cells of different groups (window boundaries)."""
    h, w = group_ids.shape
    for r in range(h):
        for c in range(w):
            if r + 1 < h and group_ids[r, c] != group_ids[r + 1, c]:
                ax.plot([c, c + 1], [r + 1, r + 1], **style)
            if c + 1 < w and group_ids[r, c] != group_ids[r, c + 1]:
                ax.plot([c + 1, c + 1], [r, r + 1], **style)


def draw_attention_panel(ax, result: dict, height: int, width: int, query, title: str, *, kind: str,
                         interval: int = 4) -> None:
    padded_h, padded_w = result["padded"]
    state = np.full((padded_h, padded_w), OUTSIDE)
    state[height:, :] = PADDING
    state[:, width:] = PADDING
    for r, c in result["masked_real"]:
        state[r, c] = MASKED_REAL
    for r, c in result["attended"]:
        state[r, c] = ATTENDED
    state[query] = QUERY
    for r in range(padded_h):
        for c in range(padded_w):
            s = state[r, c]
            ax.add_patch(patches.Rectangle((c, r), 1, 1, facecolor=CELL_COLORS[s],
                                           edgecolor=HATCH_COLORS.get(s, "none"), lw=0, hatch=HATCHES.get(s)))
    for k in range(padded_h + 1):
        ax.plot([0, padded_w], [k, k], color="#c8cdd2", lw=0.4)
    for k in range(padded_w + 1):
        ax.plot([k, k], [0, padded_h], color="#c8cdd2", lw=0.4)
    if kind == "window":
        _group_boundaries(ax, result["group_ids"], color="#34495e", lw=1.0)
        _group_outline(ax, result["group_ids"], result["group"], color="#e67e22", lw=2.6, solid_capstyle="round")
    else:  # mark each token of the query's group, spread over the whole map
        for r, c in result["members"]:
            ax.add_patch(patches.Rectangle((c + 0.12, r + 0.12), 0.76, 0.76, fill=False, edgecolor="#e67e22", lw=1.6))
        for k in range(0, padded_h + 1, interval):
            ax.plot([0, padded_w], [k, k], color="#7f8c8d", lw=0.7, ls=":")
        for k in range(0, padded_w + 1, interval):
            ax.plot([k, k], [0, padded_h], color="#7f8c8d", lw=0.7, ls=":")
    # the real map's border
    ax.add_patch(patches.Rectangle((0, 0), width, height, fill=False, edgecolor="black", lw=1.4))
    ax.set_xlim(-0.3, padded_w + 0.3)
    ax.set_ylim(padded_h + 0.3, -0.3)
    ax.set_aspect("equal")
    ax.set_xticks(sorted({0, width, padded_w}))
    ax.set_yticks(sorted({0, height, padded_h}))
    ax.tick_params(length=2, labelsize=6.5, pad=1.5)
    for spine in ax.spines.values():
        spine.set_visible(False)
    n_att = len(result["attended"])
    extra = []
    if result["masked_real"]:
        extra.append(f"{len(result['masked_real'])} wrapped")
    if result["masked_padding"]:
        extra.append(f"{len(result['masked_padding'])} padding")
    sub = f"query {tuple(query)} attends to {n_att} tokens" + (f"\nmasked in its group: {', '.join(extra)}"
                                                                 if extra else "\n")
    ax.set_title(f"{title}\n{sub}", fontsize=9)


def _legend(fig, loc_y: float, padded: bool) -> None:
    handles = [
        patches.Patch(facecolor=CELL_COLORS[QUERY], edgecolor="#bfc5ca", label="query token"),
        patches.Patch(facecolor=CELL_COLORS[ATTENDED], edgecolor="#bfc5ca", label="keys it attends to"),
        patches.Patch(facecolor=CELL_COLORS[MASKED_REAL], edgecolor="#bfc5ca", hatch="////",
                      label="in its group after the roll, masked"),
        patches.Patch(facecolor="white", edgecolor="#e67e22", lw=2, label="the query's window / grid group"),
    ]
    if padded:
        handles.append(patches.Patch(facecolor=CELL_COLORS[PADDING], edgecolor="#bfc5ca", hatch="xxx",
                                     label="padding (masked)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, loc_y), handlelength=1.6, columnspacing=1.4)


def _attention_figure(panels, height: int, width: int, title: str, padded: bool, name: str, *, window: int,
                      interval: int, **subplots) -> Path:
    """One row of panels (kind, query, shift, title): attended sets read off the code, checked against the
    layers, drawn; saved as ``name``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(12.4, 4.2), **subplots)
    for ax, (kind, query, shift, panel_title) in zip(axes, panels):
        result = attended_tokens(kind, height, width, query, window=window, shift=shift, interval=interval)
        check_against_layers(kind, height, width, query, result, window=window, shift=shift, interval=interval)
        draw_attention_panel(ax, result, height, width, query, panel_title, kind=kind, interval=interval)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    _legend(fig, 0.0, padded=padded)
    return _save(fig, name)


def make_attention(args) -> list[Path]:
    window, shift, interval = 8, 4, 4

    # 1. a map that the windows tile: W-MSA, SW-MSA inside and at the border, Grid-MSA
    height = width = 16
    q, q_border = (10, 5), (13, 2)
    tiled = _attention_figure(
        [("window", q, 0, f"(a) W-MSA, window {window}"),
         ("window", q, shift, f"(b) SW-MSA, window {window}, shift {shift}"),
         ("window", q_border, shift, "(c) SW-MSA, a query near the border"),
         ("grid", q, 0, f"(d) Grid-MSA, interval {interval}")],
        height, width, f"Which tokens one query attends to on a {height}×{width} map "
        "(read off gridattn's partitions and masks; dark lines: window boundaries)",
        padded=False, name="attention-windows.png", window=window, interval=interval)

    # 2. a map that is not a multiple of the window or interval: padded at the bottom/right, padding masked
    height, width = 14, 18
    q = (13, 15)
    padded = _attention_figure(
        [("window", q, 0, f"(a) W-MSA, window {window}"),
         ("window", q, shift, f"(b) SW-MSA, window {window}, shift {shift}"),
         ("grid", q, 0, f"(c) Grid-MSA, interval {interval}")],
        height, width, f"A {height}×{width} map (black frame): each layer pads it at the bottom/right to a multiple "
        "of its window or interval and masks the padding",
        padded=True, name="attention-padding.png", window=window, interval=interval,
        gridspec_kw={"width_ratios": [24, 24, 20]})
    return [tiled, padded]


# ---------------------------------------------------------------------------------------------------------------
# helpers shared by the run-folder figures
# ---------------------------------------------------------------------------------------------------------------


def _save(fig, name: str, quantize: bool = True) -> Path:
    """Write ``docs/images/<name>``; diagrams are reduced to a 256-colour palette (small files, same look),
    photographs (``quantize=False``) are kept exact."""
    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    plt.close(fig)
    image = Image.open(buffer).convert("RGB")
    if quantize:
        image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return path


def load_ema(stage_dir: Path):
    """The EMA model of a trainer checkpoint (``last.pt``: ``ema`` state dict + ``config['model']``)."""
    from gridattn.models import HMANet, HMANetConfig

    state = torch.load(stage_dir / "last.pt", map_location="cpu", weights_only=True)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in state["config"]["model"].items()}
    model = HMANet(HMANetConfig(**fields))
    model.load_state_dict(state["ema"])
    return model.eval(), state["step"]


def stage_order(run: Path) -> list[str]:
    """Stages of the run folder in the tiny recipe's order, then any others (e.g. the scratch control)."""
    from gridattn.train import RECIPES

    present = [p.name for p in sorted(run.iterdir()) if (p / "log.csv").is_file() or (p / "last.pt").is_file()]
    order = [s.name for s in RECIPES["tiny"].stages if s.name in present]
    return order + [name for name in present if name not in order]


def stage_colors(names: list[str]) -> dict[str, tuple]:
    """One colour per stage: a hue per scale (x2 blue, x3 green, x4 orange), darker for later stages; a grey
    for control stages (``*_scratch``)."""
    maps = {"2": plt.cm.Blues, "3": plt.cm.Greens, "4": plt.cm.Oranges}
    by_scale: dict[str, list[str]] = {}
    for name in names:
        if not name.endswith("_scratch"):
            by_scale.setdefault(name[1], []).append(name)
    colors = {}
    for scale, group in by_scale.items():
        cmap = maps.get(scale, plt.cm.Purples)
        for i, name in enumerate(group):
            colors[name] = cmap(0.5 + 0.45 * (i / max(1, len(group) - 1)))
    for name in names:
        colors.setdefault(name, (0.45, 0.45, 0.45, 1.0))
    return colors


# ---------------------------------------------------------------------------------------------------------------
# crops: HR, LR, bicubic, tiny HMANet
# ---------------------------------------------------------------------------------------------------------------


def _find_image(folder: Path, name: str) -> Path:
    for path in sorted(folder.iterdir()):
        if path.stem == name:
            return path
    raise SystemExit(f"no image {name!r} in {folder}")


def _best_crop(hr: np.ndarray, bicubic: np.ndarray, sr: np.ndarray, size: int, scale: int) -> tuple[int, int]:
    """Top-left corner (a multiple of ``scale``) of the ``size`` crop where the model gains most over bicubic."""
    from gridattn.metrics import y_channel

    gain = (y_channel(bicubic) - y_channel(hr)) ** 2 - (y_channel(sr) - y_channel(hr)) ** 2
    best, corner = -math.inf, (0, 0)
    h, w = gain.shape
    step = max(scale, size // 8 // scale * scale)
    for r in range(scale * 2, h - size - scale * 2, step):
        for c in range(scale * 2, w - size - scale * 2, step):
            score = gain[r:r + size, c:c + size].mean()
            if score > best:
                best, corner = score, (r, c)
    return corner


def make_crops(args) -> list[Path]:
    from gridattn.data import imresize, read_image
    from gridattn.data.images import modcrop
    from gridattn.inference import upscale
    from gridattn.metrics import psnr

    run = Path(args.run)
    hr_path = _find_image(Path(args.hr), args.image)
    rows = []
    for stage in args.stages:
        model, steps = load_ema(run / stage)
        scale = model.config.scale
        image = read_image(hr_path)
        image = image[..., :3] if image.ndim == 3 else np.stack([image] * 3, axis=-1)  # grey: shown as RGB
        hr = modcrop(image, scale)
        lr = imresize(hr, 1 / scale)
        bicubic = imresize(lr, scale)
        sr = upscale(model, lr, tile=args.tile)
        scores = (psnr(bicubic, hr, border=scale), psnr(sr, hr, border=scale))
        print(f"{hr_path.name} x{scale} ({stage}): bicubic {scores[0]:.2f} dB, tiny HMANet {scores[1]:.2f} dB")
        rows.append((stage, steps, scale, hr, lr, bicubic, sr, scores))

    size, zoom = args.crop, args.zoom
    last = rows[-1]
    corner = tuple(args.corner) if args.corner else _best_crop(last[3], last[5], last[6], size, last[2])
    r0, c0 = corner
    # pixel layout: every crop is shown at exactly `zoom` screen pixels per image pixel (nearest), so the picture
    # shows the pixels the model produced and the PNG stays small
    px = 1 / DPI
    cell = size * zoom
    title_h, head_h, pad = 34, 46, 10
    hr0 = rows[0][3]
    over_w = args.overview
    over_h = round(over_w * hr0.shape[0] / hr0.shape[1])
    width = pad + over_w + 2 * pad + 4 * cell + 3 * pad + pad
    height = head_h + len(rows) * (title_h + cell) + (len(rows) - 1) * pad + pad
    fig = plt.figure(figsize=(width * px, height * px))

    def axes_at(x, y, w, h):  # pixels from the top left
        ax = fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height))
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    crops_h = len(rows) * (title_h + cell) + (len(rows) - 1) * pad
    ax = axes_at(pad, head_h + (crops_h - over_h) / 2 + title_h / 2, over_w, over_h)
    # the whole image only locates the crop: a thumbnail at its display size in a 128-colour palette (small file)
    from PIL import Image

    thumb = Image.fromarray(hr0).resize((over_w, over_h), Image.Resampling.LANCZOS)
    thumb = np.asarray(thumb.quantize(colors=128, method=Image.Quantize.MEDIANCUT).convert("RGB"))
    ax.imshow(thumb, interpolation="nearest", extent=(0, hr0.shape[1], hr0.shape[0], 0))
    ax.add_patch(patches.Rectangle((c0, r0), size, size, fill=False, edgecolor="#e74c3c", lw=1.6))
    ax.set_title(f"{Path(args.hr).parent.name} {hr_path.stem}, {hr0.shape[1]}×{hr0.shape[0]}\n"
                 f"red: the {size}×{size} crop", fontsize=8.5)
    x_crops = pad + over_w + 2 * pad
    for i, (_stage, _steps, scale, hr, lr, bicubic, sr, (p_bic, p_sr)) in enumerate(rows):
        y = head_h + i * (title_h + cell + pad) + title_h
        lr_crop = lr[r0 // scale:(r0 + size) // scale, c0 // scale:(c0 + size) // scale]
        crops = [
            (np.repeat(np.repeat(lr_crop, scale, 0), scale, 1), f"×{scale} LR input\n(shown ×{scale}, nearest)", None),
            (bicubic[r0:r0 + size, c0:c0 + size], f"bicubic ×{scale}\n{p_bic:.2f} dB", None),
            (sr[r0:r0 + size, c0:c0 + size], f"tiny HMANet ×{scale}\n{p_sr:.2f} dB", "bold"),
            (hr[r0:r0 + size, c0:c0 + size], "HR (ground truth)\nY-PSNR", None),
        ]
        for j, (crop, title, weight) in enumerate(crops):
            ax = axes_at(x_crops + j * (cell + pad), y, cell, cell)
            ax.imshow(np.repeat(np.repeat(crop, zoom, 0), zoom, 1), interpolation="nearest")
            ax.set_title(title if j < 3 else "HR (ground truth)\n", fontsize=8.5, fontweight=weight, pad=3)
    fig.text(0.5, 1 - 6 / height, "Y-PSNR of the whole image (MATLAB-bicubic LR, border = scale)\n"
             f"tiny HMANet: EMA weights of the recipe's stages {', '.join(r[0] for r in rows)}",
             ha="center", va="top", fontsize=8.5)
    return [_save(fig, "crop-comparison.png", quantize=False)]


# ---------------------------------------------------------------------------------------------------------------
# training curves
# ---------------------------------------------------------------------------------------------------------------


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(handle)]


def evaluate_stages(run: Path, names: list[str], eval_folders: list[str], tile: int) -> dict:
    """Per stage and evaluation set: (EMA model Y-PSNR, bicubic Y-PSNR), as the recipe evaluates them."""
    from gridattn.evaluation import evaluate

    scores, bicubic = {}, {}
    for name in names:
        model, _ = load_ema(run / name)
        scale = model.config.scale
        for folder in eval_folders:
            label = Path(folder).parent.name if Path(folder).name == "HR" else Path(folder).name
            if (label, scale) not in bicubic:
                bicubic[label, scale] = evaluate(None, folder, scale).psnr
            scores[name, label] = (evaluate(model, folder, scale, tile=tile).psnr, bicubic[label, scale])
            print(f"{name} {label} x{scale}: model {scores[name, label][0]:.3f} dB, "
                  f"bicubic {bicubic[label, scale]:.3f} dB", flush=True)
    return scores


def make_curves(args) -> list[Path]:
    from gridattn.train import RECIPES

    run = Path(args.run)
    names = stage_order(run)
    colors = stage_colors(names)
    logs = {name: read_log(run / name / "log.csv") for name in names if (run / name / "log.csv").is_file()}
    names = [name for name in names if logs.get(name)]
    recipe = {s.name: s for s in RECIPES["tiny"].stages}

    # validation PSNR: from the logs where the trainer wrote it, else measured here (--eval, cached in --scores)
    val = {name: [(r["step"], r["val_psnr"]) for r in rows if r.get("val_psnr") is not None]
           for name, rows in logs.items()}
    have_val = any(val.values())
    scores = {}
    if args.scores and Path(args.scores).is_file():
        scores = {tuple(k.split("|")): tuple(v) for k, v in json.loads(Path(args.scores).read_text()).items()}
    elif args.eval:
        scores = evaluate_stages(run, names, args.eval, args.tile)
        if args.scores:
            Path(args.scores).write_text(json.dumps({"|".join(k): v for k, v in scores.items()}, indent=1))

    totals = [int(max(r["step"] for r in logs[name])) for name in names]
    rows = 1 + bool(have_val) + bool(scores)
    fig = plt.figure(figsize=(11.5, 3.6 + 3.0 * (rows - 1)))
    grid = fig.add_gridspec(rows, len(names), width_ratios=[max(t, 190) for t in totals],
                            height_ratios=[1.25] + [1.0] * (rows - 1), wspace=0.08, hspace=0.45,
                            left=0.065, right=0.99, top=0.83 if rows > 1 else 0.76, bottom=0.08 if rows > 1 else 0.12)
    all_loss = [r["loss"] for n in names for r in logs[n]]
    lo, hi = min(all_loss), max(all_loss)
    margin = 0.08 * (hi - lo)
    first = None
    for i, (name, total) in enumerate(zip(names, totals)):
        ax = fig.add_subplot(grid[0, i], sharey=first)
        first = first or ax
        steps = [r["step"] for r in logs[name]]
        loss = [r["loss"] for r in logs[name]]
        control = name.endswith("_scratch")
        ax.set_facecolor((*colors[name][:3], 0.08))
        ax.plot(steps, loss, "o--" if control else "o-", color=colors[name], lw=1.8, ms=4.5)
        stage = recipe.get(name)
        origin = f"from {stage.init_from}" if stage and stage.init_from else "from scratch"
        if control:
            origin = "from scratch\n(control)"
        ax.set_title(f"{name}\n×{name[1]}, {total} steps\n{origin}", fontsize=7.2,
                     color=np.array(colors[name][:3]) * 0.75, fontweight="bold")
        ax.set_xlim(0, total * 1.06)
        ax.set_xticks([0, total])
        ax.tick_params(labelsize=7)
        ax.set_ylim(lo - margin, hi + margin)
        ax.grid(alpha=0.3)
        if i:
            ax.tick_params(labelleft=False)
        else:
            ax.set_ylabel("L1 loss (one batch)", fontsize=8.5)
    fig.text(0.5, 0.985,
             "Tiny recipe, stages in running order: training loss (one batch of 8 LR patches every 50 steps)",
             ha="center", va="top", fontsize=10.5, fontweight="bold")
    fig.text(0.5, 0.955 if rows > 1 else 0.93,
             "every stage draws its step-k batch from the same images (dataset seed 0): "
             "the jump at step 250 in every stage is one hard batch, not divergence", ha="center", va="top", fontsize=8,
             color="#566573", style="italic")

    row = 1
    if have_val:
        ax = fig.add_subplot(grid[row, :])
        row += 1
        for i, name in enumerate(names):
            if val[name]:
                s, p = zip(*val[name])
                ax.plot(i + np.array(s) / max(s), p, "o-", color=colors[name], label=name)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=7.5)
        ax.set_ylabel("validation Y-PSNR (dB)")
        ax.grid(alpha=0.3)
    if scores:
        ax = fig.add_subplot(grid[row, :])
        sets = list(dict.fromkeys(label for _, label in scores))
        width = 0.7 / len(sets)
        hatches = ["", "///", "..", "xx"]
        for i, name in enumerate(names):
            for j, label in enumerate(sets):
                if (name, label) not in scores:
                    continue
                model_psnr, bic = scores[name, label]
                x = i - 0.35 + width * (j + 0.5)
                ax.bar(x, model_psnr - bic, width * 0.9, color=colors[name], hatch=hatches[j % 4], edgecolor="white")
                ax.text(x, model_psnr - bic + 0.03, f"{model_psnr - bic:+.2f} dB\n({model_psnr:.2f})", ha="center",
                        va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([f"{n} (×{n[1]})" for n in names], fontsize=7.5)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel("Y-PSNR over bicubic (dB)", fontsize=8.5)
        ax.set_ylim(0, max(m - b for m, b in scores.values()) * 1.3 + 0.1)
        legend = sets[0] if len(sets) == 1 else ", ".join(
            f"{s} ({'plain' if not hatches[k % 4] else hatches[k % 4]})" for k, s in enumerate(sets))
        ax.set_title(f"after each stage: its EMA model against MATLAB bicubic on {legend} "
                     "(labels: gain, model PSNR)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(labelsize=7.5)
    return [_save(fig, "training-curves.png")]


# ---------------------------------------------------------------------------------------------------------------
# architecture
# ---------------------------------------------------------------------------------------------------------------


def _params(module: torch.nn.Module) -> str:
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def _shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _describe(module: torch.nn.Module) -> list[str]:
    """Hyper-parameters read off a module, a few short lines."""
    from torch import nn

    from gridattn import GridAttention, WindowAttention
    from gridattn.blocks import FAB, GAB
    from gridattn.layers import FusedConv

    if isinstance(module, nn.Conv2d):
        k = module.kernel_size
        return [f"{k[0]}×{k[1]}, {module.in_channels}→{module.out_channels}"]
    if isinstance(module, nn.LayerNorm):
        return [f"{module.normalized_shape[0]} channels"]
    if isinstance(module, nn.Linear):
        return [f"{module.in_features}→{module.out_features}"]
    if isinstance(module, FusedConv):
        return [f"3×3 {module.dim}→{module.expand.out_channels}",
                f"SE {module.se.fc1.in_features}→{module.se.fc1.out_features}",
                f"1×1 {module.project.in_features}→{module.project.out_features}"]
    if isinstance(module, FAB):
        attn = module.attn.fn
        return [("SW-MSA" if any(attn.shift) else "W-MSA") + f", shift {attn.shift[0]}",
                f"{attn.num_heads} heads, win {attn.window_size[0]}",
                f"MLP {module.mlp.fn.fc1.in_features}→{module.mlp.fn.fc1.out_features}"]
    if isinstance(module, WindowAttention):
        return [f"{module.dim} ch, {module.num_heads} heads × {module.dim // module.num_heads}, "
                f"window {module.window_size[0]}, shift {module.shift[0]}"]
    if isinstance(module, GridAttention):
        return [f"{module.dim} ch, {module.num_heads} heads × {module.dim // module.num_heads}, "
                f"interval {module.interval[0]}, {'two' if module.two_stage else 'one'}-stage"]
    if isinstance(module, GAB):
        return [f"{module.dim} channels"]
    return []


def _record_shapes(model: torch.nn.Module, size: int) -> dict:
    """Output shape of every module during one forward pass of a 1×C×size×size image."""
    shapes, hooks = {}, []

    def hook(name):
        def record(module, inputs, output) -> None:  # returns None: the output is left as it is
            if torch.is_tensor(output):
                shapes.setdefault(name, tuple(output.shape))
        return record

    for name, module in model.named_modules():
        hooks.append(module.register_forward_hook(hook(name)))
    with torch.no_grad():
        model(torch.rand(1, model.config.in_channels, size, size))
    for hook_handle in hooks:
        hook_handle.remove()
    return shapes


class _Canvas:
    """Boxes and arrows in data units on one full-figure axes."""

    PALETTE = {
        "io": ("#fdfefe", "#7f8c8d"),
        "conv": ("#eaf2f8", "#2e86c1"),
        "rhtb": ("#fef5e7", "#e67e22"),
        "fused": ("#f4ecf7", "#8e44ad"),
        "attn": ("#fdedec", "#c0392b"),
        "up": ("#e8f8f5", "#17a589"),
    }

    def __init__(self, width_in: float, height_in: float, width: float, height: float) -> None:
        self.fig = plt.figure(figsize=(width_in, height_in))
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(0, height)
        self.ax.axis("off")
        self.unit_per_pt = height / (height_in * 72)

    def box(self, x, y, w, h, name, cls, lines=(), style="conv", fs=7.6):
        """A rounded box; ``name`` (module path, monospace), ``cls`` (bold), ``lines`` (details), centred."""
        face, edge = self.PALETTE[style]
        self.ax.add_patch(patches.FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.2,rounding_size=0.7",
                                                 facecolor=face, edgecolor=edge, lw=1.2))
        rows = []
        if name:
            rows += [(part, fs - 0.6, "normal", "monospace", "#566573") for part in name.split("\n")]
        if cls:
            rows.append((cls, fs + 0.4, "bold", "sans-serif", "#1b2631"))
        rows += [(line, fs - 0.8, "normal", "sans-serif", "#34495e") for line in lines]
        heights = [1.28 * r[1] * self.unit_per_pt for r in rows]
        top = y + h / 2 + sum(heights) / 2
        for (text, size, weight, family, color), height in zip(rows, heights):
            self.ax.text(x + w / 2, top - height / 2, text, ha="center", va="center", fontsize=size,
                         fontweight=weight, family=family, color=color)
            top -= height

    def arrow(self, x0, y0, x1, y1, color="#566573", lw=1.1):
        self.ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                         arrowprops=dict(arrowstyle="-|>", color=color, lw=lw, shrinkA=0, shrinkB=0,
                                         mutation_scale=9))

    def line(self, xs, ys, color="#566573", lw=1.0):
        self.ax.plot(xs, ys, color=color, lw=lw, solid_capstyle="round")

    def frame(self, x, y, w, h, color, face):
        self.ax.add_patch(patches.FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.2,rounding_size=1.0",
                                                 facecolor=face, edgecolor=color, lw=1.3, ls="--"))

    def text(self, x, y, text, **kwargs):
        self.ax.text(x, y, text, **kwargs)


def _wrap_name(name: str, limit: int = 13) -> str:
    if len(name) <= limit or "_" not in name:
        return name
    cut = name.rfind("_", 0, limit) + 1 or limit
    return name[:cut] + "\n" + name[cut:]


def make_architecture(args) -> list[Path]:
    from gridattn.models import HMANet, hmanet_config

    config = hmanet_config(args.scale, args.preset)
    torch.manual_seed(0)
    model = HMANet(config).eval()
    size = args.lr_size
    shapes = _record_shapes(model, size)
    c = config
    cv = _Canvas(12.5, 8.9, 125, 89)
    muted = dict(fontsize=7.6, color="#566573", style="italic", ha="center")

    total = sum(p.numel() for p in model.parameters())
    cv.text(62.5, 86.6, f"HMANet, {args.preset} preset ×{c.scale}: {total / 1e6:.2f} M parameters "
            f"(shapes for one {c.in_channels}×{size}×{size} input)", ha="center", fontsize=12, fontweight="bold")
    cv.text(62.5, 84.0, "drawn from a real HMANet instance: module names, classes, sizes and parameter counts read "
            "from its modules, output shapes recorded by forward hooks", ha="center", fontsize=8.3, color="#566573")

    # ---- the whole network ----------------------------------------------------------------------------------
    items = [(None, "input image", [_shape((1, c.in_channels, size, size)), f"(x − mean)·{c.img_range:g}",
                                    f"pad to ×{c.pad_multiple}", "(symmetric)"], "io")]
    for name, module in model.named_children():
        if name == "layers":
            last = shapes["layers"] if "layers" in shapes else shapes[f"layers.{len(module) - 1}"]
            items.append((name, f"RHTB ×{len(module)}", [f"depths {tuple(c.depths)}".replace(" ", ""),
                                                        f"heads {tuple(c.num_heads)}".replace(" ", ""),
                                                        _shape(last),
                                                        _params(module)], "rhtb"))
        elif name == "conv_before_upsample":
            items.append((name, "Conv2d+LReLU", _describe(module[0]) + [_shape(shapes[name]), _params(module)], "conv"))
        elif name == "upsample":
            parts = list(module)
            pairs = len(parts) // 2
            items.append((name, f"(Conv, Shuffle)×{pairs}",
                          [f"Conv2d {_describe(parts[0])[0]}", f"PixelShuffle({parts[1].upscale_factor})",
                           _shape(shapes[name]), _params(module)], "up"))
        else:
            items.append((name, type(module).__name__, _describe(module) + [_shape(shapes[name]), _params(module)],
                          "conv"))
    items.append((None, "output image", [_shape((1, c.in_channels, size * c.scale, size * c.scale)),
                                         "+ bicubic(input)" if c.image_skip else f"/{c.img_range:g} + mean",
                                         f"crop to {c.scale}H×{c.scale}W"], "io"))
    w, y0, h = 11.0, 63.0, 14.0
    gap = (125 - 2 - len(items) * w) / (len(items) - 1)
    xs = [1 + i * (w + gap) for i in range(len(items))]
    for x, (name, cls, lines, style) in zip(xs, items):
        cv.box(x, y0, w, h, _wrap_name(name) if name else None, cls, lines, style, fs=7.2)
    for a, b in zip(xs[:-1], xs[1:]):
        cv.arrow(a + w + 0.2, y0 + h / 2, b - 0.2, y0 + h / 2)
    names = [it[0] for it in items]
    x_skip0 = xs[names.index("conv_first")] + w / 2
    x_skip1 = xs[names.index("conv_after_body")] + w / 2
    cv.line([x_skip0, x_skip0, x_skip1], [y0 + h + 0.2, y0 + h + 1.7, y0 + h + 1.7])
    cv.arrow(x_skip1, y0 + h + 1.7, x_skip1, y0 + h + 0.25)
    cv.text((x_skip0 + x_skip1) / 2, y0 + h + 2.1, "+ conv_first output (long skip)", fontsize=7.4, color="#566573",
            ha="center")
    cv.text(62.5, y0 - 2.4, "channels-last maps (B, H, W, C) from embed_norm to norm, images (B, C, H, W) outside",
            **muted)
    x_layers = xs[names.index("layers")] + w / 2

    # ---- one RHTB ----------------------------------------------------------------------------------------------
    rhtb = model.layers[0]
    blocks = list(rhtb.blocks)
    fy, fh = 36.5, 21.5
    cv.frame(1, fy, 123, fh, "#e67e22", "#fffaf2")
    cv.arrow(x_layers, y0 - 0.3, x_layers, fy + fh + 0.45, color="#e67e22", lw=1.3)
    cv.text(62.5, fy + fh - 2.0, f"layers.0: RHTB (one of {len(model.layers)}, {_params(rhtb)} parameters):   "
            "y = x + conv(group(x)),   group = blocks, then x + gab(x)·scale", ha="center", fontsize=9.5,
            fontweight="bold", color="#a04000")
    row = [(f"blocks.{i}", type(b).__name__, _describe(b) + [_params(b)], "fused" if type(b).__name__ == "FusedConv"
            else "conv") for i, b in enumerate(blocks)]
    row.append(("gab", "GAB", [f"·scale ({rhtb.scale.numel()} ch)", "added to x", _params(rhtb.gab)], "attn"))
    row.append(("conv", "Conv2d", _describe(rhtb.conv) + [_params(rhtb.conv)], "conv"))
    row.append((None, "+ x", ["residual", _shape(shapes["layers.0"])], "io"))
    bw, by, bh = min(10.0, (121 - 1.2 * (len(row) - 1)) / len(row)), fy + 4.6, 10.8
    bgap = (121 - len(row) * bw) / (len(row) - 1)
    bxs = [2 + i * (bw + bgap) for i in range(len(row))]
    for x, (name, cls, lines, style) in zip(bxs, row):
        cv.box(x, by, bw, bh, name, cls, lines, style, fs=7.2)
    for a, b in zip(bxs[:-1], bxs[1:]):
        cv.arrow(a + bw + 0.2, by + bh / 2, b - 0.2, by + bh / 2)
    cv.line([bxs[0] - 0.5, bxs[0] - 0.5, bxs[-1] + bw / 2], [by + bh / 2, by - 1.6, by - 1.6])
    cv.arrow(bxs[-1] + bw / 2, by - 1.6, bxs[-1] + bw / 2, by - 0.25)
    fabs = [b for b in blocks if type(b).__name__ == "FAB"]
    shifts = sorted({b.attn.fn.shift[0] for b in fabs})
    cv.text(62.5, fy + 1.0, f"depth {len(fabs)}: FABs alternate shift {' / '.join(map(str, shifts))} "
            f"(W-MSA / SW-MSA), a FusedConv before every W-MSA FAB: {len(blocks)} blocks", **muted)

    # ---- the GAB ---------------------------------------------------------------------------------------------
    gab = rhtb.gab
    gy, gh = 1.0, 32.0
    cv.frame(1, gy, 123, gh, "#c0392b", "#fdf2f0")
    x_gab = bxs[len(blocks)] + bw / 2
    cv.arrow(x_gab, by - 0.3, x_gab, gy + gh + 0.45, color="#c0392b", lw=1.3)
    cv.text(62.5, gy + gh - 2.2, f"layers.0.gab: GAB ({_params(gab)} parameters, numerics '{gab.numerics}'): three "
            "attention branches side by side, each with its own qkv from the un-normalised input",
            ha="center", fontsize=9.5, fontweight="bold", color="#922b21")
    mid = gy + 14.5
    cv.box(3, mid - 4, 10, 8, None, "input", [_shape(shapes["layers.0.gab"])], "io")
    branches = [("window_attn", gab.window_attn, "W-MSA"), ("window_attn_s", gab.window_attn_s, "SW-MSA"),
                ("grid_attn", gab.grid_attn, "Grid-MSA")]
    concat_x = 57.0
    for k, (name, layer, kind) in enumerate(branches):
        cy = mid + (1 - k) * 8.6
        lines = _describe(layer) + [f"qkv Linear {layer.in_dim}→{layer.qkv.out_features}; "
                                    f"out {_shape(shapes[f'layers.0.gab.{name}'])}, {_params(layer)}"]
        if name == "grid_attn":
            lines.append(f"grid_proj {layer.grid_proj.in_features}→{layer.grid_proj.out_features}, "
                         f"{len(layer.position_biases)} DynamicPositionBias")
        else:
            lines.append("RelativePositionBias table")
        cv.box(19, cy - 3.8, 33, 7.6, None, f"{name}: {type(layer).__name__} ({kind})", lines, "attn", fs=7.2)
        cv.arrow(13.2, mid, 18.8, cy)
        cv.arrow(52.2, cy, concat_x - 0.2, mid)
    tail = [(None, "concat", [f"{sum(layer.dim for _, layer, _ in branches)} ch"], "io"),
            ("fc", "Linear", _describe(gab.fc), "attn"),
            ("norm1", "LayerNorm", _describe(gab.norm1), "attn"),
            (None, "+ input", ["residual"], "io"),
            ("mlp", type(gab.mlp).__name__, [f"Mlp {gab.mlp.fn.fc1.in_features}→{gab.mlp.fn.fc1.out_features}"
                                             f"→{gab.mlp.fn.fc2.out_features}", "x + LN(mlp(x))"], "attn"),
            (None, "output", [_shape(shapes["layers.0.gab"])], "io")]
    tw = 9.6
    tgap = (123 - concat_x - len(tail) * tw) / (len(tail) - 1)
    for k, (name, cls, lines, style) in enumerate(tail):
        x = concat_x + k * (tw + tgap)
        cv.box(x, mid - 4, tw, 8, name, cls, lines, style, fs=7.2)
        if k:
            cv.arrow(x - tgap + 0.2, mid, x - 0.2, mid)
    _save(cv.fig, "hmanet-architecture.png", quantize=True)
    return [IMAGES / "hmanet-architecture.png"]


# ---------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_help = "output folder of examples/train_hmanet.py --preset tiny (one sub-folder per stage)"

    sub.add_parser("attention", help="attention-windows.png, attention-padding.png")

    p = sub.add_parser("architecture", help="hmanet-architecture.png")
    p.add_argument("--preset", default="official", choices=("official", "small", "tiny"))
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--lr-size", type=int, default=64, help="input size of the forward pass that records shapes")

    def run_args(p, crops: bool, curves: bool):
        p.add_argument("--run", default="runs/tiny", help=run_help)
        if crops:
            p.add_argument("--hr", default="../shared/data/Set14/HR", help="folder of HR benchmark images")
            p.add_argument("--image", default="zebra", help="file name stem of the image in --hr")
            p.add_argument("--stages", nargs="+", default=["x2_finetune", "x4_finetune"], help="stages, one row each")
            p.add_argument("--crop", type=int, default=64, help="crop size in HR pixels")
            p.add_argument("--zoom", type=int, default=2, help="screen pixels per crop pixel")
            p.add_argument("--overview", type=int, default=170, help="width of the whole-image view in pixels")
            p.add_argument("--corner", type=int, nargs=2, help="crop's top-left corner (row col) in HR pixels; "
                           "default: where the last stage gains most over bicubic")
        if curves:
            p.add_argument("--eval", nargs="*", default=[], help="HR folders to score every stage's EMA model on "
                           "(when the logs hold no validation PSNR)")
            p.add_argument("--scores", help="JSON file caching the --eval scores: read if it exists, else written")
        p.add_argument("--tile", type=int, default=64, help="tiled inference (LR pixels), as the recipe evaluates")

    run_args(sub.add_parser("crops", help="crop-comparison.png"), True, False)
    run_args(sub.add_parser("curves", help="training-curves.png"), False, True)
    p = sub.add_parser("all", help="every figure")
    run_args(p, True, True)
    p.add_argument("--preset", default="official", choices=("official", "small", "tiny"))
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--lr-size", type=int, default=64)
    args = parser.parse_args()

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    commands = {"attention": [make_attention], "architecture": [make_architecture], "crops": [make_crops],
                "curves": [make_curves], "all": [make_attention, make_architecture, make_crops, make_curves]}
    for command in commands[args.command]:
        command(args)


if __name__ == "__main__":
    main()
