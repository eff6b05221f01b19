"""Import the official HMANet implementation from a local checkout of korouuuuu/HMA (never vendored).

The official ``hma_arch.py`` needs three names from BasicSR; they are stubbed in ``sys.modules`` so that
BasicSR (and its torchvision dependency) need not be installed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

from gridattn.models import HMANetConfig


def _stub_basicsr() -> None:
    if "basicsr.archs.arch_util" in sys.modules:
        return
    registry = types.SimpleNamespace(register=lambda: (lambda obj: obj))
    names = ("basicsr", "basicsr.utils", "basicsr.utils.registry", "basicsr.archs", "basicsr.archs.arch_util")
    modules = {name: types.ModuleType(name) for name in names}
    modules["basicsr.utils.registry"].ARCH_REGISTRY = registry
    modules["basicsr.archs.arch_util"].to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    modules["basicsr.archs.arch_util"].trunc_normal_ = torch.nn.init.trunc_normal_
    sys.modules.update(modules)


def load_official_arch(checkout: str | Path) -> types.ModuleType:
    """The official ``hma/archs/hma_arch.py`` of ``checkout`` as a module."""
    path = Path(checkout) / "hma" / "archs" / "hma_arch.py"
    if not path.is_file():
        raise SystemExit(f"{checkout} is not a checkout of korouuuuu/HMA (no {path.relative_to(checkout)})")
    _stub_basicsr()
    spec = importlib.util.spec_from_file_location("hma_arch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_model(arch: types.ModuleType, config: HMANetConfig) -> torch.nn.Module:
    """An official ``HMANet`` with ``config``'s hyper-parameters (randomly initialised, eval mode)."""
    return arch.HMANet(
        upscale=config.scale, embed_dim=config.embed_dim, depths=list(config.depths),
        num_heads=list(config.num_heads), window_size=config.window_size, interval_size=config.interval,
        mlp_ratio=config.mlp_ratio, upsampler="pixelshuffle", resi_connection="1conv",
        drop_path_rate=config.drop_path_rate,  # only acts in training (benchmarks/train_speed.py)
    ).eval()
