"""Import the official implementations (HMANet, SwinIR, HAT, DAT, neosr's HMA) from local checkouts (never vendored).

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


def _stub_timm() -> None:
    """``timm.models.layers`` with the three names SwinIR's file imports (timm needs torchvision)."""
    if "timm.models.layers" in sys.modules:
        return
    _stub_basicsr()
    names = ("timm", "timm.models", "timm.models.layers")
    modules = {name: types.ModuleType(name) for name in names}
    util = sys.modules["basicsr.archs.arch_util"]
    modules["timm.models.layers"].to_2tuple = util.to_2tuple
    modules["timm.models.layers"].trunc_normal_ = util.trunc_normal_
    modules["timm.models.layers"].DropPath = _DropPath
    sys.modules.update(modules)


class _DropPath(torch.nn.Module):
    """The identity in eval, as every comparison here runs (stochastic depth in training is not compared)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0:
            keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
            return x * keep / (1 - self.p)
        return x


def load_module(path: Path, name: str) -> types.ModuleType:
    """A Python file of an official checkout as a module, its BasicSR / timm imports stubbed."""
    if not path.is_file():
        raise SystemExit(f"no {path}: not a checkout of the official repository")
    _stub_basicsr()
    _stub_timm()
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_swinir_arch(checkout: str | Path) -> types.ModuleType:
    """The official ``models/network_swinir.py`` of a checkout of JingyunLiang/SwinIR as a module."""
    return load_module(Path(checkout) / "models" / "network_swinir.py", "network_swinir")


def official_swinir(arch: types.ModuleType, config) -> torch.nn.Module:
    """An official ``SwinIR`` with a :class:`~gridattn.models.SwinIRConfig`'s hyper-parameters (eval mode)."""
    return arch.SwinIR(
        upscale=config.scale, in_chans=config.in_channels, img_size=config.img_size, window_size=config.window_size,
        img_range=config.img_range, depths=list(config.depths), embed_dim=config.embed_dim,
        num_heads=list(config.num_heads), mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias,
        upsampler="" if config.upsampler == "none" else config.upsampler, resi_connection=config.resi_connection,
        drop_path_rate=config.drop_path_rate,
    ).eval()


def load_hat_arch(checkout: str | Path) -> types.ModuleType:
    """The official ``hat/archs/hat_arch.py`` of a checkout of XPixelGroup/HAT as a module."""
    return load_module(Path(checkout) / "hat" / "archs" / "hat_arch.py", "hat_arch")


def official_hat(arch: types.ModuleType, config) -> torch.nn.Module:
    """An official ``HAT`` with a :class:`~gridattn.models.HATConfig`'s hyper-parameters (eval mode)."""
    return arch.HAT(
        upscale=config.scale, in_chans=config.in_channels, img_size=64, window_size=config.window_size,
        compress_ratio=config.compress_ratio, squeeze_factor=config.squeeze_factor, conv_scale=config.conv_scale,
        overlap_ratio=config.overlap_ratio, img_range=config.img_range, depths=list(config.depths),
        embed_dim=config.embed_dim, num_heads=list(config.num_heads), mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias, upsampler=config.upsampler, resi_connection=config.resi_connection,
        drop_path_rate=config.drop_path_rate,
    ).eval()


def official_hat_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """HAT's test pipeline (``hat/models/hat_model.py``): reflection padding to the window, the model, crop."""
    window, scale = model.window_size, model.upscale
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (0, (-w) % window, 0, (-h) % window), "reflect")
    return model(padded)[..., :h * scale, :w * scale]


def official_hma_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """HMA's test pipeline: mirror the image to a multiple of the window (``cat([x, flip(x)])`` then crop), the
    model, crop."""
    window, scale = model.window_size, model.upscale
    h, w = x.shape[-2:]
    x = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :h + (-h) % window]
    x = torch.cat([x, torch.flip(x, [3])], 3)[:, :, :, :w + (-w) % window]
    return model(x)[:, :, :h * scale, :w * scale]


def load_neosr_hma_arch(checkout: str | Path) -> types.ModuleType:
    """neosr's ``neosr/archs/hma_arch.py`` of a checkout of neosr-project/neosr as a module; its imports of
    neosr's option parser and registry are stubbed (``net_opt`` answers scale 4, not training)."""
    if "neosr.archs.arch_util" not in sys.modules:
        _stub_basicsr()
        names = ("neosr", "neosr.archs", "neosr.archs.arch_util", "neosr.utils", "neosr.utils.registry")
        modules = {name: types.ModuleType(name) for name in names}
        util = sys.modules["basicsr.archs.arch_util"]
        modules["neosr.archs.arch_util"].net_opt = lambda: (4, False)
        modules["neosr.archs.arch_util"].to_2tuple = util.to_2tuple
        modules["neosr.utils.registry"].ARCH_REGISTRY = sys.modules["basicsr.utils.registry"].ARCH_REGISTRY
        sys.modules.update(modules)
    path = Path(checkout) / "neosr" / "archs" / "hma_arch.py"
    spec = importlib.util.spec_from_file_location("neosr_hma_arch", path)
    if not path.is_file():
        raise SystemExit(f"no {path}: not a checkout of neosr-project/neosr")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        mlp_ratio=config.mlp_ratio, upsampler="pixelshuffle", resi_connection=config.resi_connection,
        drop_path_rate=config.drop_path_rate,  # only acts in training (benchmarks/train_speed.py)
    ).eval()


def load_dat_arch(checkout: str | Path) -> types.ModuleType:
    """The official ``basicsr/archs/dat_arch.py`` of a checkout of zhengchen1999/DAT as a module."""
    return load_module(Path(checkout) / "basicsr" / "archs" / "dat_arch.py", "dat_arch")


def official_dat(arch: types.ModuleType, config) -> torch.nn.Module:
    """An official ``DAT`` with a :class:`~gridattn.models.DATConfig`'s hyper-parameters (eval mode)."""
    return arch.DAT(
        upscale=config.scale, in_chans=config.in_channels, img_size=config.img_size, img_range=config.img_range,
        split_size=list(config.window_size), depth=list(config.depths), embed_dim=config.embed_dim,
        num_heads=list(config.num_heads), expansion_factor=config.mlp_ratio, qkv_bias=config.qkv_bias,
        resi_connection=config.resi_connection, upsampler=config.upsampler, drop_path_rate=config.drop_path_rate,
    ).eval()
