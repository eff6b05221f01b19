"""Run the official HMANet implementation on the cases of tests/official_cases.py and store its outputs.

Usage: python tools/make_official_fixtures.py /path/to/korouuuuu/HMA-checkout
The official code is never vendored; it needs only three names from BasicSR, which are stubbed here.
Inputs whose size is not a multiple of the window are padded the way the official test code does
(``cat([x, flip(x)])`` then crop) and the output is cropped back.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from official_cases import CASES, FIXTURE, config_of, input_of, official_state  # noqa: E402


def _stub_basicsr() -> None:
    registry = types.SimpleNamespace(register=lambda: (lambda obj: obj))
    modules = {
        "basicsr": types.ModuleType("basicsr"),
        "basicsr.utils": types.ModuleType("basicsr.utils"),
        "basicsr.utils.registry": types.ModuleType("basicsr.utils.registry"),
        "basicsr.archs": types.ModuleType("basicsr.archs"),
        "basicsr.archs.arch_util": types.ModuleType("basicsr.archs.arch_util"),
    }
    modules["basicsr.utils.registry"].ARCH_REGISTRY = registry
    modules["basicsr.archs.arch_util"].to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    modules["basicsr.archs.arch_util"].trunc_normal_ = torch.nn.init.trunc_normal_
    sys.modules.update(modules)


def main(checkout: str) -> None:
    _stub_basicsr()
    spec = importlib.util.spec_from_file_location("hma_arch", Path(checkout) / "hma" / "archs" / "hma_arch.py")
    hma_arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hma_arch)
    outputs = {}
    for name in CASES:
        c = config_of(name)
        model = hma_arch.HMANet(upscale=c.scale, embed_dim=c.embed_dim, depths=list(c.depths),
                                num_heads=list(c.num_heads), window_size=c.window_size, interval_size=c.interval,
                                mlp_ratio=c.mlp_ratio, upsampler="pixelshuffle", resi_connection="1conv").eval()
        model.load_state_dict(official_state(name), strict=True)
        x = input_of(name)
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % c.window_size, (-w) % c.window_size
        x = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :h + pad_h]
        x = torch.cat([x, torch.flip(x, [3])], 3)[:, :, :, :w + pad_w]
        with torch.no_grad():
            out = model(x)[:, :, :h * c.scale, :w * c.scale]
        outputs[name] = out.contiguous()
        print(f"{name}: output {tuple(out.shape)}, range [{out.min():.3f}, {out.max():.3f}]")
    torch.save(outputs, ROOT / "tests" / "fixtures" / FIXTURE)


if __name__ == "__main__":
    main(sys.argv[1])
