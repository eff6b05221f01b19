"""What this installation can do: versions, devices, attention backends and dtypes (``gridattn info``).

Every backend and dtype is tried on a small attention call on every device, so the report says what
actually runs, and for what does not, the reason (the error it raised).
"""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from ._errors import one_line
from ._version import __version__
from .functional.backends import BACKENDS, attention, get_default_backend, unavailable_reason
from .functional.precision import bfloat16_pays, measure_matmul_rates

__all__ = ["collect_info", "devices", "format_info"]

_OPTIONAL_PACKAGES = ("safetensors", "xformers", "onnx", "onnxruntime", "onnxscript", "spandrel", "scikit-image")
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def devices() -> list[str]:
    """Devices PyTorch can use here: ``"cpu"``, then ``"cuda:N"`` for each visible GPU, then ``"mps"``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def _try_attention(backend: str, device: str, dtype: torch.dtype) -> str | None:
    """None if ``backend`` runs a small biased attention call on ``device`` in ``dtype``, else why not."""
    reason = unavailable_reason(backend, device, dtype)
    if reason is not None:
        return reason
    try:
        q = torch.randn(2, 2, 16, 16, device=device, dtype=dtype)
        bias = torch.randn(1, 2, 16, 16, device=device, dtype=dtype)
        out = attention(q, q, q, bias, backend=backend)
        if not torch.isfinite(out).all():
            return "gave non-finite values"
    except Exception as error:  # the report lists what fails instead of failing itself
        summary = one_line(error, first=True)
        return summary if summary == type(error).__name__ else f"{type(error).__name__}: {summary}"
    return None


def collect_info() -> dict:
    """The report as a dict (``gridattn info --json`` prints it).

    Keys: ``versions`` (gridattn, python, torch and optional packages: version or ``None``),
    ``default_backend``, ``models`` (per registered architecture: its title, presets and layouts), ``devices``
    (per device: its name, its measured ``matmul_gflops`` per dtype and whether ``bfloat16_pays``, and per dtype,
    per backend ``"ok"`` or the
    reason it does not run).
    """
    versions = {"gridattn": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "cuda (torch build)": torch.version.cuda or "none (CPU build)",
                "cpu threads": str(torch.get_num_threads())}
    versions.update({name: _version(name) for name in _OPTIONAL_PACKAGES})
    from .models.registry import architectures

    models = {arch.name: {"title": arch.title, "presets": sorted(arch.presets), "layouts": list(arch.layouts)}
              for arch in architectures().values()}
    report: dict = {"versions": versions, "default_backend": get_default_backend(), "models": models, "devices": {}}
    for device in devices():
        name = (torch.cuda.get_device_name(device) if device.startswith("cuda")
                else platform.processor() or platform.machine())
        support = {}
        for dtype in _DTYPES:
            dtype_name = str(dtype).removeprefix("torch.")
            support[dtype_name] = {backend: _try_attention(backend, device, dtype) or "ok" for backend in BACKENDS}
        rates = measure_matmul_rates(device)
        report["devices"][device] = {"name": name, "attention": support,
                                     "matmul_gflops": {"float32": round(rates.float32, 1),
                                                       "bfloat16": round(rates.bfloat16, 1)},
                                     "bfloat16_pays": bfloat16_pays(device)}
    return report


def format_info(report: dict) -> str:
    """The report as text: versions, then one table of backends by dtype per device."""
    lines = ["versions:"]
    width = max(map(len, report["versions"]))
    for name, version in report["versions"].items():
        lines.append(f"  {name:<{width}}  {version or 'not installed'}")
    lines.append(f"default attention backend: {report['default_backend']}")
    lines.append("models:")
    for name, entry in report["models"].items():
        lines.append(f"  {name:<8} {entry['title']}: presets {', '.join(entry['presets'])}; "
                     f"layouts {', '.join(entry['layouts'])}")
    for device, entry in report["devices"].items():
        lines.append(f"device {device} ({entry['name']}):")
        gflops = entry["matmul_gflops"]
        lines.append(f"  matrix products: float32 {gflops['float32']:.0f} GFLOP/s, bfloat16 {gflops['bfloat16']:.0f} "
                     f"GFLOP/s: bfloat16 {'pays' if entry['bfloat16_pays'] else 'does not pay'} here")
        for dtype, backends in entry["attention"].items():
            for backend, status in backends.items():
                lines.append(f"  {dtype:<9} {backend:<9} {status}")
    return "\n".join(lines)
