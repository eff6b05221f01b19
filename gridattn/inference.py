"""Running a super-resolution model on real images: any size and kind, optional tiling and self-ensemble.

Tiling keeps memory bounded on large images: the low-resolution image is cut into tiles of ``tile`` pixels
that overlap by ``tile_overlap``; tile origins are multiples of the model's padding multiple (its windows
and grids), so windows line up with those of the whole image. Output tiles are blended with weights that are
0 within ``overlap / 4`` of an inner tile edge and ramp linearly to 1 over the next ``overlap / 2`` (the
weights of neighbouring tiles sum to 1), as a running weighted mean that leaves a pixel's value untouched when
the tiles agree on it. A model whose output at a pixel depends only on inputs within
``overlap / 4`` of it (convolutions, window attention) therefore gives exactly the whole-image result; a
model with global (grid) attention does not, and ``docs`` / the README give the measured difference.

Out-of-memory errors are raised as they are, never swallowed (the official code pastes a stale tile instead):
lower ``tile`` and try again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._errors import InputError
from .data.images import pil_pixels
from .data.imresize import imresize
from .functional.precision import compute_dtype
from .layers import bias_cache
from .memory import estimate_inference_memory
from .models.config import ModelConfig

Model = Callable[[torch.Tensor], torch.Tensor]
MemoryEstimate = Callable[[int, int, int, torch.dtype], int]
"""``(height, width, batch, dtype) -> bytes`` of one no-grad forward on the model's device."""


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`upscale` needs to know of a model besides calling it.

    Attributes:
        in_channels: image channels the model takes (grayscale images go through an RGB model as three
            equal channels).
        pad_multiple: tile sizes and origins are multiples of this, so that the model's windows line up with
            the whole image's.
        scale: upscaling factor, or ``None`` to read it off the first output (then the host-memory check of
            the result is skipped).
        memory: bytes of one forward, or ``None`` (no memory check).
    """

    in_channels: int = 3
    pad_multiple: int = 1
    scale: int | None = None
    memory: MemoryEstimate | None = None

    @classmethod
    def of(cls, model: Model) -> ModelSpec:
        """The spec of a gridattn model (any registered architecture) from its configuration (memory by
        :func:`~gridattn.memory.estimate_inference_memory`); the defaults for any other model."""
        if not isinstance(getattr(model, "config", None), ModelConfig):
            return cls()
        config, device, _ = model.config, *_placement(model)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())

        def memory(height: int, width: int, batch: int, dtype: torch.dtype) -> int:
            return estimate_inference_memory(config, height, width, batch=batch, dtype=dtype, device=device,
                                             weights=weights)
        return cls(config.in_channels, config.pad_multiple, config.scale, memory)


def _placement(model: Model) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of a module's first parameter; the CPU and float32 for anything else."""
    param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return device, dtype


def _starts(length: int, tile: int, step: int) -> list[int]:
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + step)
    return starts


def _round_tile(tile: int, multiple: int) -> int:
    """Tiles are whole multiples of the model's padding multiple, so their windows line up with the image's."""
    return max(multiple, tile // multiple * multiple)


def _tile_layout(height: int, width: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[tuple[int, int]]]:
    """The tile size rounded to the model's multiple, and the (top, left) of every tile."""
    tile = _round_tile(tile, multiple)
    step = (tile - overlap) // multiple * multiple
    if overlap < 0 or step < multiple:
        raise InputError(
            f"tile_overlap={overlap} must be >= 0 and leave a step of at least {multiple} pixels in a tile of {tile}"
        )
    return tile, [(top, left) for top in _starts(height, tile, step) for left in _starts(width, tile, step)]


def _edge_weights(length: int, inner_start: bool, inner_end: bool, overlap: int, scale: int) -> torch.Tensor:
    """1-D blending weights of one output tile of ``length`` pixels."""
    weights = torch.ones(length, dtype=torch.float32)
    if overlap == 0:
        return weights
    distance = (torch.arange(length, dtype=torch.float32) + 0.5) / scale  # in low-resolution pixels
    ramp = ((distance - overlap / 4) / (overlap / 2)).clamp(0, 1)
    if inner_start:
        weights = torch.minimum(weights, ramp)
    if inner_end:
        weights = torch.minimum(weights, ramp.flip(0))
    return weights


def _run_tiled(model: Model, x: torch.Tensor, tile: int, overlap: int, multiple: int, batch_tiles: int,
               progress) -> torch.Tensor:
    batch, _, height, width = x.shape
    tile, boxes = _tile_layout(height, width, tile, overlap, multiple)
    out = weight_sum = None
    scale = None
    # tiles of one shape are batched together (inner tiles all have the full size)
    by_shape: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for top, left in boxes:
        by_shape.setdefault((min(tile, height - top), min(tile, width - left)), []).append((top, left))
    for (th, tw), group in by_shape.items():
        for i in range(0, len(group), batch_tiles):
            chunk = group[i:i + batch_tiles]
            inputs = torch.cat([x[:, :, top:top + th, left:left + tw] for top, left in chunk])
            outputs = model(inputs).float().cpu()
            if scale is None:
                scale = outputs.shape[-1] // tw
                if outputs.shape[-2:] != (th * scale, tw * scale):
                    raise ValueError(f"the model maps {th}x{tw} to {tuple(outputs.shape[-2:])}: not an integer scale")
                out = torch.zeros(batch, outputs.shape[1], height * scale, width * scale)
                weight_sum = torch.zeros(1, 1, height * scale, width * scale)
            for j, (top, left) in enumerate(chunk):
                wy = _edge_weights(th * scale, top > 0, top + th < height, overlap, scale)
                wx = _edge_weights(tw * scale, left > 0, left + tw < width, overlap, scale)
                weight = (wy[:, None] * wx[None, :])[None, None]
                region = (slice(None), slice(None), slice(top * scale, (top + th) * scale),
                          slice(left * scale, (left + tw) * scale))
                # running weighted mean: exactly the tile's value wherever the tiles agree
                total = weight_sum[region] + weight
                share = torch.where(total > 0, weight / total, torch.zeros(()))
                out[region] += share * (outputs[j * batch:(j + 1) * batch] - out[region])
                weight_sum[region] = total
            if progress is not None:
                progress.update(len(chunk))
    return out


_TRANSFORMS = [(rotations, flip) for flip in (False, True) for rotations in range(4)]


def _forward_transform(x: torch.Tensor, rotations: int, flip: bool) -> torch.Tensor:
    x = x.flip(-1) if flip else x
    return torch.rot90(x, rotations, dims=(-2, -1))


def _inverse_transform(x: torch.Tensor, rotations: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, -rotations, dims=(-2, -1))
    return x.flip(-1) if flip else x


def _to_tensor(image) -> tuple[torch.Tensor, Callable[[torch.Tensor], object]]:
    """Image of any supported kind -> float (1 or B, C, H, W) in [0, 1], and the function converting back."""
    from PIL import Image

    if isinstance(image, Image.Image):
        pixels = np.asarray(image) if image.mode in ("L", "LA", "RGB", "RGBA") else pil_pixels(image)
        tensor, back = _to_tensor(pixels)
        return tensor, lambda out: Image.fromarray(back(out))
    if isinstance(image, torch.Tensor):
        if image.dim() not in (3, 4) or not image.is_floating_point():
            raise InputError(
                f"a tensor image must be float (C, H, W) or (B, C, H, W), got {image.dtype} {tuple(image.shape)}"
            )
        if image.dim() == 3:
            return image[None], lambda out: out[0]
        return image, lambda out: out
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise InputError(f"an image must be (H, W) or (H, W, C), got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"the image is empty: shape {array.shape}")
    gray = array.ndim == 2
    if array.dtype in (np.uint8, np.uint16):
        peak = float(np.iinfo(array.dtype).max)
        chw = torch.from_numpy(np.array(array[..., None] if gray else array, dtype=np.float32))  # a copy
        tensor = chw.permute(2, 0, 1)[None] / peak

        def back(out):
            hwc = torch.floor(out[0].double().clamp(0, 1) * peak + 0.5).permute(1, 2, 0).numpy().astype(array.dtype)
            return hwc[..., 0] if gray else hwc
        return tensor, back
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"numpy images must be uint8, uint16 or float in [0, 1], got {array.dtype}")
    chw = torch.from_numpy(np.array(array[..., None] if gray else array)).permute(2, 0, 1)[None]  # a copy

    def back_float(out):
        hwc = out[0].permute(1, 2, 0).numpy().astype(array.dtype)
        return hwc[..., 0] if gray else hwc
    return chw.to(torch.float32 if array.dtype != np.float64 else torch.float64), back_float


def _check_values(x: torch.Tensor, unit_range: bool) -> None:
    """Images must be finite; float image arrays must lie in [0, 1] (a float array in [0, 255] is the usual
    mistake). Tensors may leave [0, 1]: a denoiser's noisy input, for example."""
    if not torch.isfinite(x).all():
        raise InputError("the image contains NaN or infinite values")
    if not unit_range:
        return
    low, high = x.min().item(), x.max().item()
    if low < -1e-3 or high > 1 + 1e-3:
        raise InputError(f"float images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}] "
                         "(divide 8-bit data by 255, or pass the uint8 array)")


class ImageTooLargeError(InputError):
    """The image cannot be upscaled at once in the memory of its device; the message suggests a tile size."""


def available_memory(device: torch.device | str) -> int | None:
    """Bytes that can still be allocated on ``device``: free CUDA memory plus what PyTorch's caching
    allocator holds unused, or the host's ``MemAvailable``; ``None`` where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _check_memory(spec: ModelSpec, x: torch.Tensor, tile: int | None, batch_tiles: int, device: torch.device,
                  dtype: torch.dtype) -> None:
    """Raise :class:`ImageTooLargeError` before running a forward that cannot fit (models with an estimate)."""
    estimate, multiple, scale = spec.memory, spec.pad_multiple, spec.scale
    if estimate is None or scale is None:
        return
    batch, channels, height, width = x.shape
    # host: the float input, the output and the running sums of tiles / self-ensemble runs, in float32
    host = 4 * batch * channels * height * width * (1 + 3 * scale**2)
    if tile is None:
        need = estimate(height, width, batch, dtype)
    else:
        tile = _round_tile(tile, multiple)
        need = estimate(min(tile, height), min(tile, width), batch * batch_tiles, dtype)
    gib = 2**30
    host_free = available_memory("cpu")
    # the result alone would take half the host's memory, and with the forward it would not fit
    if host_free is not None and host > host_free / 2 and host + (need if device.type == "cpu" else 0) > host_free:
        raise ImageTooLargeError(
            f"a {width}x{height} image gives a {width * scale}x{height * scale} result that needs about "
            f"{host / gib:.1f} GiB of host memory ({host_free / gib:.1f} GiB available): cut the image into parts"
        )
    free = host_free if device.type == "cpu" else available_memory(device)
    if free is None or need + (host if device.type == "cpu" else 0) <= free:
        return
    side = multiple
    while side < 8192 and estimate(side * 2, side * 2, batch * batch_tiles, dtype) <= free / 2:
        side *= 2
    fits = estimate(side, side, batch * batch_tiles, dtype) <= free / 2 and (tile is None or side < tile)
    advice = f"pass tile={side} (command line: --tile {side})" if fits else "no tile size fits"
    raise ImageTooLargeError(
        f"upscaling {width}x{height} pixels{'' if tile is None else f' in tiles of {tile}'} needs about "
        f"{need / gib:.1f} GiB on {device}, but {free / gib:.1f} GiB are available: {advice}"
    )


def upscale(
    model: Model,
    image,
    *,
    tile: int | None = None,
    tile_overlap: int = 16,
    self_ensemble: bool = False,
    batch_tiles: int = 4,
    progress: bool = False,
    check_memory: bool = True,
    spec: ModelSpec | None = None,
    compile: bool = False,
    dtype: str | torch.dtype = "auto",
):
    """Super-resolve ``image`` with ``model``.

    Args:
        model: an ``nn.Module`` or callable mapping float ``(B, C, H, W)`` in ``[0, 1]`` to
            ``(B, C, sH, sW)`` (e.g. :class:`gridattn.models.HMANet`, which pads any size itself). It runs in
            eval mode without gradients on the device and dtype of its parameters.
        image: numpy ``uint8`` / ``uint16`` or float ``(H, W)`` / ``(H, W, C)``, a PIL image (its pixels as
            :func:`~gridattn.data.pil_pixels` gives them; L, LA, RGB, RGBA as they are), or a float tensor
            ``(C, H, W)`` / ``(B, C, H, W)``; grayscale images go through an RGB model as three equal
            channels; the alpha channel of gray + alpha and RGBA images is resized with MATLAB
            bicubic.
        tile: tile size in low-resolution pixels (``None``: the whole image at once).
        tile_overlap: overlap of neighbouring tiles in low-resolution pixels; 16 changed PSNR by less than
            0.001 dB against whole-image inference for a model with grid attention (docs/guides/evaluation.md).
        self_ensemble: average the 8 flips and rotations (x8 the time).
        batch_tiles: tiles run per model call.
        progress: show a progress bar.
        check_memory: for models with a memory estimate (gridattn models:
            :func:`~gridattn.memory.estimate_inference_memory`), refuse up front an image (or tile) whose
            forward would not fit in the device's available memory.
        spec: what upscale needs to know of the model (input channels, padding multiple, scale, memory
            estimate); default :meth:`ModelSpec.of` the model. Pass one for your own windowed models.
        compile: run the model through ``torch.compile`` (on CUDA with ``mode="reduce-overhead"``: CUDA graphs).
            Each input shape compiles once (PyTorch keeps the compiled code for later calls on the same model):
            with ``tile``, a large image needs at most four shapes (full, bottom, right and corner tiles) and
            a smaller last batch. The first call pays the compilation (tens of seconds on a CPU).
        dtype: what the forward computes in (:func:`~gridattn.functional.compute_dtype`): ``"auto"`` (default)
            is bfloat16 for float32 weights on a device where it pays
            (:func:`~gridattn.functional.bfloat16_pays`: CPUs with bfloat16 units, recent GPUs), their own dtype
            elsewhere; ``"float32"``, ``"bfloat16"`` or a ``torch.dtype`` choose. bfloat16 runs float32 weights
            under ``torch.autocast``; the output is float32 either way.

    Returns:
        The upscaled image, of the kind and dtype of ``image`` (values clipped to ``[0, 1]``; ``uint8`` and
        ``uint16`` arrays come back in their own range).

    Raises:
        ValueError: an image that is not ``(H, W)`` / ``(H, W, C)`` / ``(C, H, W)`` / ``(B, C, H, W)``, empty,
            of an integer dtype other than ``uint8`` / ``uint16``, NaN / Inf values, a float array (not a
            tensor) with values outside ``[0, 1]``, a channel count the model does not take, a tile overlap
            that leaves no step, a ``dtype`` the weights cannot run in.
        ImageTooLargeError: (a ``ValueError``) the forward would not fit in memory; the message gives a
            tile size that does.

    Example:
        >>> import numpy as np
        >>> from gridattn.models import HMANet, hmanet_config
        >>> model = HMANet(hmanet_config(2, "tiny"))
        >>> upscale(model, np.zeros((10, 12, 3), np.uint8)).shape
        (20, 24, 3)
    """
    from tqdm.auto import tqdm

    x, back = _to_tensor(image)
    _check_values(x, unit_range=not isinstance(image, torch.Tensor))
    spec = ModelSpec.of(model) if spec is None else spec
    channels, multiple = spec.in_channels, spec.pad_multiple
    device, weights_dtype = _placement(model)
    dtype = compute_dtype(dtype, device, weights_dtype)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != weights_dtype else contextlib.nullcontext()
    alpha = None
    if (x.shape[1] == 4 and channels == 3) or (x.shape[1] == 2 and channels in (1, 3)):  # RGBA, gray + alpha
        x, alpha = x[:, :-1], x[:, -1:]
    gray = x.shape[1] == 1 and channels == 3
    if gray:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != channels:
        raise InputError(f"the model takes {channels}-channel images, got {x.shape[1]} channels")
    if check_memory:
        _check_memory(spec, x, tile, batch_tiles, device, weights_dtype)  # autocast keeps some activations float32
    transforms = _TRANSFORMS if self_ensemble else _TRANSFORMS[:1]
    runner = model
    if compile:
        runner = torch.compile(model, dynamic=False, mode="reduce-overhead" if device.type == "cuda" else None)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    count = len(transforms)
    if tile is not None:  # rotated runs have the same number of tiles
        count *= len(_tile_layout(x.shape[-2], x.shape[-1], tile, tile_overlap, multiple)[1])
    # the weights do not change during the call: with more than one model call, position biases once per size
    # and no wait for the GPU to check them; with one call the cache would only hold memory
    cached = isinstance(model, nn.Module) and count > 1
    try:
        with torch.no_grad(), autocast, bias_cache(model) if cached else contextlib.nullcontext():
            x_device = x.to(device=device, dtype=weights_dtype)
            bar = tqdm(total=count, disable=not progress, desc="upscale", unit="tile" if tile else "pass")
            total = None
            for rotations, flip in transforms:
                xt = _forward_transform(x_device, rotations, flip)
                if tile is None:
                    y = runner(xt).float().cpu()
                    bar.update(1)
                else:
                    y = _run_tiled(runner, xt, tile, tile_overlap, multiple, batch_tiles, bar)
                y = _inverse_transform(y, rotations, flip)
                total = y if total is None else total + y
            bar.close()
    finally:
        if was_training:
            model.train()
    out = (total / len(transforms)).clamp(0, 1)
    if gray:
        out = out.mean(dim=1, keepdim=True)
    if alpha is not None:
        scale = out.shape[-1] // alpha.shape[-1]
        out = torch.cat([out, imresize(alpha.double(), scale=scale).float().clamp(0, 1)], dim=1)
    return back(out.to(x.dtype))
