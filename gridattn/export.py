"""Export a gridattn model (any architecture) to ONNX and check an exported file against PyTorch with onnxruntime.

:func:`export_onnx` traces the model with ``torch.export`` (the "dynamo" ONNX exporter, ``torch.onnx.export(...,
dynamo=True)``) and writes one self-contained ``.onnx`` file with input ``"lr"`` ``(B, C, H, W)`` and output ``"sr"``
``(B, C, scale*H, scale*W)``, float32, values in the input's range (``[0, 1]`` for images). The graph contains the
whole model: the mirror padding to a multiple of ``lcm(window_size, interval)``, the shift masks, relative-position
indices and grid position biases computed for the actual size, the crop, and the bicubic image skip of the
``"tiny"`` / ``"small"`` presets.

* ``dynamic=False`` (default): the graph is fixed to ``(batch_size, C, *example_size)``; onnxruntime refuses other
  shapes. Export one file per size.
* ``dynamic=True``: batch, height and width are symbolic; any ``B, H, W >= 1`` runs (sizes that are not
  multiples of the window included) and gives the PyTorch result. The traced example must exceed
  ``pad_multiple`` in both dimensions. ``torch.export`` records a range that starts above ``pad_multiple`` (one
  window), because of size-1 checks in PyTorch's view logic; the ONNX operators do not depend on them, and
  smaller sizes (1x1, 5x3, 8x17 with window 8) and batch 1 are tested to give the PyTorch result as well.

The TorchScript exporter (``dynamo=False``) is not used: it records Python-int sizes (masks, position indices,
padding) as constants, so a graph exported at one size computes wrong shapes at another.

Attention runs on the plain ``"math"`` backend in the graph (``MatMul`` / ``Softmax``), exact for the masks
(``-inf``) of corrected numerics and the ``-100`` of official numerics. The model is copied to CPU float32 in
eval mode before tracing; the caller's model is not changed.

Needs ``pip install 'gridattn[onnx]'`` (onnx, onnxscript; onnxruntime for :func:`verify_onnx`) and torch >= 2.6.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._errors import InputError
from ._version import __version__
from .functional._checks import check_positive, to_pair
from .functional.backends import use_backend
from .layers import set_attention_options
from .models.registry import architecture_of

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
MIN_OPSET = 18  # the dynamo exporter's operator library (onnxscript's torchlib) is written for opset 18
DEFAULT_OPSET = 18  # widest runtime support (onnxruntime >= 1.14); 18..23 all give the same numbers
EXPORT_BACKENDS = ("math", "sdpa")
METADATA_PREFIX = "gridattn."


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the exporters' progress chatter (missing torchvision ops, skipped constant folds, deprecations);
    real failures still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


UNBOUNDED_SCORES = 2**62  # max_scores of the attention layers in a dynamic graph: every size is one block
# Rewrite rules of onnxscript's optimiser left out of the export (see _without_slow_rewrite_rules).
SKIPPED_REWRITE_RULES = frozenset({"SlicesSplit"})


@contextlib.contextmanager
def _without_slow_rewrite_rules() -> Iterator[None]:
    """Run the exporter's optimiser (``optimize=True``: onnxscript's ``optimize_ir``) without the rewrite rules
    in :data:`SKIPPED_REWRITE_RULES`.

    ``SlicesSplit`` (two ``Slice`` of the same tensor that halve its last axis -> one ``Split``) has two output
    nodes, and onnxscript matches such patterns by brute force: for every ``Slice`` node it lists the whole
    graph and pairs the node with every other ``Slice``. That is quadratic in the graph size; a dynamic graph of
    the official x4 model (thousands of ``Slice`` nodes from the symbolic shape arithmetic) spent about six of
    its eight export minutes there. HMANet has no such halving slices, so the rule never applies and the file
    is the same without it. The other rules, constant folding and the clean-up passes run unchanged. If
    onnxscript's rule list is not where this expects it, nothing is changed (slow, but the same result).
    """
    try:
        from onnxscript import rewriter
    except ImportError:  # pragma: no cover - onnxscript is required before this runs
        yield
        return
    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if not isinstance(rules, tuple):
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in rules if getattr(r, "name", None) not in SKIPPED_REWRITE_RULES)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


class OnnxExportError(RuntimeError):
    """Tracing or converting the model failed; the message names the step, the cause is chained."""


@dataclass(frozen=True)
class OnnxExportInfo:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file.
        opset: ONNX opset of the default domain.
        dynamic: batch, height and width symbolic (``True``) or fixed to ``input_shape``.
        input_shape: ``(B, C, H, W)`` of the input; ``None`` entries are symbolic.
        output_shape: ``(B, C, scale*H, scale*W)``; ``None`` entries are symbolic.
        scale: upscaling factor of the model.
        input_name, output_name: graph input and output names (``"lr"``, ``"sr"``).
        metadata: the ``metadata_props`` stored in the file (keys start with ``"gridattn."``).
        seconds: time the export took.
    """

    path: Path
    opset: int
    dynamic: bool
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    scale: int
    input_name: str
    output_name: str
    metadata: dict[str, str]
    seconds: float


def _require(*modules: str):
    """Import ``modules`` or raise an ImportError that says how to install them."""
    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as error:
            raise ImportError(
                f"ONNX export needs the package {name!r}, which is not installed: pip install 'gridattn[onnx]' "
                "(onnx, onnxscript, onnxruntime)"
            ) from error
    return loaded


def _max_opset() -> int:
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # private module moved: the last value known to work
        return 23
    return int(ONNX_MAX_OPSET)


def _check_torch() -> None:
    if not hasattr(torch.export, "Dim") or not hasattr(torch.export.Dim, "DYNAMIC"):
        raise OnnxExportError(f"ONNX export needs torch >= 2.6 (torch.export.Dim.DYNAMIC), found {torch.__version__}")


def _check_arguments(model, opset, batch_size, attention_backend) -> None:
    architecture_of(model)  # TypeError for anything but a gridattn model
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= _max_opset():
        raise InputError(f"opset must be an int in [{MIN_OPSET}, {_max_opset()}] (the range the torch.onnx "
                         f"dynamo exporter supports), got {opset!r}")
    check_positive(batch_size, "batch_size")
    if attention_backend not in EXPORT_BACKENDS:
        raise ValueError(f"attention_backend must be one of {EXPORT_BACKENDS} for ONNX export, "
                         f"got {attention_backend!r}")


def _metadata(model: nn.Module, dynamic: bool, input_shape) -> dict[str, str]:
    config = model.config
    return {
        f"{METADATA_PREFIX}model": architecture_of(model).title,
        f"{METADATA_PREFIX}scale": str(config.scale),
        f"{METADATA_PREFIX}config": json.dumps(config.to_dict(), sort_keys=True),
        f"{METADATA_PREFIX}numerics": config.numerics,
        f"{METADATA_PREFIX}pad_multiple": str(config.pad_multiple),
        f"{METADATA_PREFIX}dynamic": json.dumps(dynamic),
        f"{METADATA_PREFIX}input_shape": json.dumps(list(input_shape)),
        f"{METADATA_PREFIX}input_range": "[0, 1] images, float32, (B, C, H, W)",
        f"{METADATA_PREFIX}version": __version__,
    }


def _shape(value_info) -> tuple[int | None, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _name_dims(proto, input_name: str, output_name: str) -> None:
    """Give the symbolic dims readable names: ``batch``, ``height``, ``width`` (output: ``height*scale`` ...)."""
    renames: dict[str, str] = {}
    for graph_input in proto.graph.input:
        if graph_input.name != input_name:
            continue
        for dim, name in zip(graph_input.type.tensor_type.shape.dim, ("batch", None, "height", "width")):
            if name is not None and dim.HasField("dim_param"):
                renames[dim.dim_param] = name
                dim.dim_param = name
    if not renames:
        return
    import re

    pattern = re.compile("|".join(sorted((re.escape(k) for k in renames), key=len, reverse=True)))
    for graph_output in proto.graph.output:
        for dim in graph_output.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = pattern.sub(lambda m: renames[m.group(0)], dim.dim_param)


def _coprime_at_least(size: int, multiple: int) -> int:
    """The smallest ``n >= size`` with ``gcd(n, multiple) == 1``."""
    while math.gcd(size, multiple) != 1:
        size += 1
    return size


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = False,
    example_size: int | tuple[int, int] = (64, 64),
    batch_size: int = 1,
    attention_backend: str = "math",
    optimize: bool = True,
) -> OnnxExportInfo:
    """Write ``model`` as an ONNX file with input ``"lr"`` and output ``"sr"``.

    Args:
        model: a gridattn model of any registered architecture (any configuration, either numerics mode). It is
            copied to CPU float32 in eval mode for tracing; the object passed is not changed.
        path: the ``.onnx`` file to write (parent folders are created).
        opset: ONNX opset, ``MIN_OPSET`` (18) up to what the installed torch supports (23 for torch 2.13).
        dynamic: symbolic batch, height and width (any ``B, H, W >= 1``) instead of the fixed
            ``(batch_size, C, *example_size)``.
        example_size: the ``(H, W)`` (or one int for a square) traced; the fixed size when ``dynamic=False``.
            A dynamic export needs both above ``model.config.pad_multiple`` (the result does not depend on it
            otherwise; it is traced at the next size coprime with it, so that the graph holds every padding path).
        batch_size: the batch of a fixed-size graph. A dynamic graph is traced with batch 2 (a traced batch of 1
            would be fixed to 1) and takes any batch.
        attention_backend: ``"math"`` (default: ``MatMul`` + ``Softmax``) or ``"sdpa"`` (PyTorch's
            ``scaled_dot_product_attention``, which the exporter decomposes into the same operators).
        optimize: run the exporter's graph optimiser (constant folding, dead-code removal).

    Returns:
        An :class:`OnnxExportInfo` (path, shapes, opset, metadata, time).

    The file's ``metadata_props`` hold ``gridattn.scale``, ``gridattn.config`` (the configuration as JSON,
    readable back with :func:`read_onnx_metadata`), ``gridattn.numerics``, ``gridattn.dynamic``,
    ``gridattn.input_shape``, ``gridattn.pad_multiple`` and ``gridattn.version``.

    Raises:
        TypeError: ``model`` is not a gridattn model.
        ValueError: ``opset`` outside ``[MIN_OPSET, max]``, a bad ``example_size`` (or, when dynamic, one not
            above ``pad_multiple``), ``batch_size``, ``attention_backend`` or ``dynamic``.
        ImportError: onnx or onnxscript is not installed (the message gives the pip command).
        OnnxExportError: torch is older than 2.6, or tracing / conversion failed (the cause is chained).
    """
    _check_arguments(model, opset, batch_size, attention_backend)
    height, width = to_pair(example_size, "example_size")
    if not isinstance(dynamic, bool):
        raise ValueError(f"dynamic must be a bool, got {dynamic!r}")
    multiple = model.config.pad_multiple
    if dynamic and min(height, width) <= multiple:
        raise InputError(f"a dynamic export needs example_size above the padding multiple {multiple} in both "
                         f"dimensions (two windows per axis), got {(height, width)}: tracing a single window "
                         "would fix sizes that must stay symbolic")
    (onnx,) = _require("onnx")
    _require("onnxscript")
    _check_torch()
    start = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    module = copy.deepcopy(model).to("cpu", torch.float32).eval()  # bias caches are not copied
    # layers built with an explicit backend follow the export's too. With symbolic sizes the attention layers'
    # loop over blocks of windows / queries (functional.blocked) would be traced with the example's number of
    # blocks (one), and the graph would attend to only the first block's windows of a larger image (onnxruntime
    # failed beyond 42 windows of 16x16, e.g. a 112x112 input of the official HMANet): one block of any size instead
    set_attention_options(module, backend=attention_backend, max_scores=UNBOUNDED_SCORES if dynamic else None)
    batch = 2 if dynamic else batch_size
    if dynamic:
        # traced at a size every window must pad: a multiple of a window would trace the path without padding
        # (fixed for every size) in models that pad inside their layers (SwinIR, HAT, DAT in corrected numerics),
        # and onnxruntime then fails at sizes that need it. The windows divide pad_multiple (DAT's 4x16 rectangles
        # divide 16): a size coprime with it is no multiple of any of them
        height, width = (_coprime_at_least(size, multiple) for size in (height, width))
    example = torch.rand(batch, model.config.in_channels, height, width, generator=torch.Generator().manual_seed(0))
    dynamic_shapes = None
    if dynamic:
        dim = torch.export.Dim.DYNAMIC
        dynamic_shapes = ({0: dim, 2: dim, 3: dim},)
    with torch.no_grad(), use_backend(attention_backend), _quiet_exporters(), _without_slow_rewrite_rules():
        try:
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes, strict=False)
        except Exception as error:
            raise OnnxExportError(
                f"torch.export could not trace the model ({type(error).__name__}: {error})") from error
        try:
            onnx_program = torch.onnx.export(
                program, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], optimize=optimize, verbose=False,
            )
        except Exception as error:
            raise OnnxExportError(f"converting the traced model to ONNX opset {opset} failed "
                                  f"({type(error).__name__}: {error})") from error
    proto = onnx_program.model_proto
    _name_dims(proto, INPUT_NAME, OUTPUT_NAME)
    input_shape = _shape(proto.graph.input[0])
    metadata = _metadata(model, dynamic, input_shape)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = (f"gridattn {__version__} {architecture_of(model).title} x{model.config.scale} "
                        f"({model.config.numerics} numerics): "
                        f"{INPUT_NAME} (B, C, H, W) float32 in [0, 1] -> {OUTPUT_NAME} (B, C, {model.config.scale}H, "
                        f"{model.config.scale}W)")
    onnx.save_model(proto, os.fspath(path))
    onnx.checker.check_model(os.fspath(path))
    return OnnxExportInfo(
        path=path, opset=opset, dynamic=dynamic, input_shape=input_shape, output_shape=_shape(proto.graph.output[0]),
        scale=model.config.scale, input_name=INPUT_NAME, output_name=OUTPUT_NAME, metadata=metadata,
        seconds=time.perf_counter() - start,
    )


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, object]:
    """The gridattn metadata of an exported file, decoded: ``scale`` (int), ``config`` (dict), ``dynamic``
    (bool), ``input_shape`` (list, ``None`` for symbolic dims), ``numerics``, ``pad_multiple``, ``version``.

    Raises:
        ImportError: onnx is not installed.
        ValueError: the file has no gridattn metadata (not written by :func:`export_onnx`).
    """
    (onnx,) = _require("onnx")
    proto = onnx.load(os.fspath(path), load_external_data=False)
    props = {p.key[len(METADATA_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}
    if "scale" not in props:
        raise ValueError(f"{path} has no gridattn metadata (not written by gridattn.export.export_onnx)")
    decoded: dict[str, object] = dict(props)
    for key in ("scale", "pad_multiple"):
        decoded[key] = int(props[key])
    for key in ("config", "dynamic", "input_shape"):
        decoded[key] = json.loads(props[key])
    return decoded


def verify_onnx(
    path: str | os.PathLike,
    model: torch.nn.Module,
    sizes: Iterable[int | tuple[int, int]],
    *,
    batch_size: int | None = None,
    seed: int = 0,
) -> list[tuple[tuple[int, int], float]]:
    """Run the ONNX file with onnxruntime (CPU) and ``model`` with PyTorch on the same random images.

    Args:
        path: a file written by :func:`export_onnx` (or any single-input image model of the same contract).
        model: the PyTorch model to compare with; run in eval mode without gradients on its own device and
            dtype (its training flag is restored afterwards).
        sizes: low-resolution ``(H, W)`` pairs (or ints for squares). A fixed-size file accepts only its own.
        batch_size: images per run; default: the file's fixed batch, or 1 for a dynamic batch.
        seed: seed of the uniform ``[0, 1)`` test images.

    Returns:
        ``[((H, W), max_abs_diff), ...]`` in the order of ``sizes``. Float32 graphs agree to ~1e-7 to 1e-6
        (a different summation order; 4e-7 for the official x4 model with random weights).

    Raises:
        ImportError: onnxruntime is not installed.
        ValueError: a bad size, or a size or batch the fixed-size file cannot take (the message gives its shape).
        RuntimeError: onnxruntime failed on an input (its message is kept), or the outputs' shapes differ.
    """
    (ort,) = _require("onnxruntime")
    sizes = [to_pair(size, "each size") for size in sizes]
    if not sizes:
        raise ValueError("sizes must name at least one (height, width)")
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    fixed = [d if isinstance(d, int) else None for d in graph_input.shape]
    if len(fixed) != 4:
        raise ValueError(f"{path} takes a {len(fixed)}-D input {graph_input.shape}; expected images (B, C, H, W)")
    batch = batch_size if batch_size is not None else (fixed[0] or 1)
    if fixed[0] is not None and batch != fixed[0]:
        raise ValueError(f"{path} is fixed to batch {fixed[0]}, got batch_size={batch}; export with dynamic=True")
    wrong = [s for s in sizes if any(f is not None and f != v for f, v in zip(fixed[2:], s))]
    if wrong:
        raise ValueError(f"{path} is fixed to input shape {graph_input.shape}; it cannot run sizes {wrong}. "
                         "Export one file per size, or with dynamic=True")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    channels = fixed[1] or getattr(getattr(model, "config", None), "in_channels", 3)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    results = []
    try:
        for height, width in sizes:
            image = torch.rand(batch, channels, height, width, generator=generator)
            with torch.no_grad():
                expected = model(image.to(device, dtype)).float().cpu().numpy()
            try:
                (actual,) = session.run([session.get_outputs()[0].name], {graph_input.name: image.numpy()})
            except Exception as error:  # onnxruntime raises its own exception types
                raise RuntimeError(f"onnxruntime failed on input {tuple(image.shape)}: {error}") from error
            if actual.shape != expected.shape:
                raise RuntimeError(f"ONNX output {actual.shape} differs from PyTorch's {expected.shape} "
                                   f"for input {tuple(image.shape)}")
            results.append(((height, width), float(abs(actual - expected).max())))
    finally:
        model.train(was_training)
    return results
