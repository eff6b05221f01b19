"""OverlappingCrossAttention (HAT's OCA) against a float64 reference written out with loops, and against HAT's
own OCAB when a checkout of XPixelGroup/HAT is at hand ($HAT_CHECKOUT)."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import at_least, random_map, randomize_, seeds
from torch import nn

from gridattn import Mlp, OverlappingCrossAttention, PreNorm
from gridattn.functional.blocked import MAX_SCORES

HAT_CHECKOUT = Path(os.environ.get("HAT_CHECKOUT", "/work/checkouts/XPixelGroup+HAT"))
HAT_ARCH = HAT_CHECKOUT / "hat" / "archs" / "hat_arch.py"
RATIOS = (0.25, 0.5, 1.0)


# ---------------------------------------------------------------------------------------------------------
# the reference: every query pixel, every key position of its overlapping window, index arithmetic only


def reference(layer: OverlappingCrossAttention, x: torch.Tensor, official: bool | None = None) -> torch.Tensor:
    """OCA in float64 from the layer's weights alone.

    Query pixel ``(y, x)`` lies in window ``(y // ws, x // ws)`` at ``(qy, qx)``; its keys are the ``ows x ows``
    positions ``(wy·ws - p + ky, wx·ws - p + kx)``, ``p = (ows - ws) // 2``. A key outside the map is skipped
    (masked mode) or holds ``k = v = 0`` (official mode). The bias of a pair is the table row
    ``(ky - qy + ws - ows + 1)·L + (kx - qx + ws - ows + 1)``, ``L = ws + ows - 1``, read as HAT reads it: a
    negative row counts from the end of the table.
    """
    official = layer.official_padding if official is None else official
    x = x.double()
    batch, height, width, dim = x.shape
    heads = layer.num_heads
    head_dim = dim // heads
    ws = layer.window_size
    ows = int(ws * layer.overlap_ratio) + ws
    before = (ows - ws) // 2
    side = ws + ows - 1
    weight = layer.qkv.weight.double()
    qkv = x @ weight.T
    if layer.qkv.bias is not None:
        qkv = qkv + layer.qkv.bias.double()
    q, k, v = (qkv[..., i * dim:(i + 1) * dim].reshape(batch, height, width, heads, head_dim) for i in range(3))
    table = layer.relative_position_bias_table.double()
    out = []
    for y in range(height):
        for x_ in range(width):
            wy, wx = y // ws, x_ // ws
            qy, qx = y - wy * ws, x_ - wx * ws
            rows_in, ys, xs, rows_out = [], [], [], []
            for ky in range(ows):
                for kx in range(ows):
                    py, px = wy * ws - before + ky, wx * ws - before + kx
                    row = (ky - qy + ws - ows + 1) * side + (kx - qx + ws - ows + 1)
                    if 0 <= py < height and 0 <= px < width:
                        rows_in.append(row)
                        ys.append(py)
                        xs.append(px)
                    elif official:
                        rows_out.append(row)
            keys, values = k[:, ys, xs], v[:, ys, xs]  # (B, n, heads, d)
            scores = torch.einsum("bhd,bnhd->bhn", q[:, y, x_], keys) * head_dim**-0.5
            scores = scores + table[torch.tensor(rows_in)].T
            if rows_out:  # zero keys: the score is the bias alone; zero values add nothing
                scores = torch.cat([scores, table[torch.tensor(rows_out)].T.expand(batch, -1, -1)], dim=-1)
            weights = torch.softmax(scores, dim=-1)[..., : len(rows_in)]
            out.append(torch.einsum("bhn,bnhd->bhd", weights, values).reshape(batch, dim))
    out = torch.stack(out, dim=1).reshape(batch, height, width, dim)
    return out @ layer.proj.weight.double().T + layer.proj.bias.double()


@st.composite
def layers(draw, max_window: int = 8):
    heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    window, ratio = draw(st.integers(2, max_window)), draw(st.sampled_from(RATIOS))
    official = draw(st.booleans())
    # small max_scores force blocks of windows (the bias and the mask summed a few windows at a time)
    max_scores = draw(st.sampled_from([MAX_SCORES, 1, 500]))
    backend = draw(st.sampled_from(["sdpa", "math"]))
    return OverlappingCrossAttention(heads * head_dim, heads, window, overlap_ratio=ratio,
                                     official_padding=official, max_scores=max_scores, backend=backend)


def maps(max_size: int = 20):
    return st.tuples(seeds, st.integers(1, 2), st.integers(1, max_size), st.integers(1, max_size))


@settings(max_examples=at_least(30))  # a wide space: sizes, windows, ratios, modes, blocks, backends
@given(layer=layers(), seed=seeds, shape=maps())
def test_matches_reference_float64(layer, seed, shape):
    layer = randomize_(layer, seed).double()
    x = random_map(*shape, layer.dim, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference(layer, x), rtol=1e-10, atol=1e-10)


@given(layer=layers(), seed=seeds, shape=maps())
def test_float32_close_to_float64_reference(layer, seed, shape):
    layer = randomize_(layer, seed, std=0.3)
    x = random_map(*shape, layer.dim)
    torch.testing.assert_close(layer(x).double(), reference(layer, x), rtol=1e-5, atol=1e-5)


@given(layer=layers(max_window=5), seed=seeds, shape=maps(max_size=11))
def test_gradients_match_reference(layer, seed, shape):
    layer = randomize_(layer, seed).double()
    x = random_map(*shape, layer.dim, dtype=torch.float64).requires_grad_()
    cotangent = random_map(seed + 1, *shape[1:], layer.dim, dtype=torch.float64)
    inputs = [x, *layer.parameters()]
    ours = torch.autograd.grad((layer(x) * cotangent).sum(), inputs)
    theirs = torch.autograd.grad((reference(layer, x) * cotangent).sum(), inputs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_mask_value_minus_100_is_close_but_not_exact():
    """A finite mask value leaks a little (e^-100 per key); -inf is exact."""
    layer = randomize_(OverlappingCrossAttention(8, 2, 4, overlap_ratio=0.5, mask_value=-100.0), 0).double()
    x = random_map(3, 1, 7, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference(layer, x), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# negative controls: the reference comparison catches the bugs it guards against


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("size", [(7, 9), (8, 8)])
def test_negative_control_unmasked_padding_fails(size):
    """Attending the zero keys outside the map (the official behaviour) where masking is asked for: the masked
    comparison fails, at sizes that are not multiples of the window and also at multiples (the unfold's border)."""
    layer = randomize_(OverlappingCrossAttention(8, 2, 4, overlap_ratio=0.5), 1).double()
    x = random_map(2, 1, *size, 8, dtype=torch.float64)
    broken = OverlappingCrossAttention(8, 2, 4, overlap_ratio=0.5, official_padding=True).double()
    broken.load_state_dict(layer.state_dict())
    assert _max_diff(layer(x), reference(layer, x)) < 1e-10
    assert _max_diff(broken(x), reference(layer, x)) > 1e-3
    with pytest.raises(AssertionError):
        torch.testing.assert_close(broken(x), reference(layer, x), rtol=1e-10, atol=1e-10)


def test_negative_control_mask_of_the_multiple_only_fails():
    """Masking only the padding to the multiple of the window and not the border the key windows stick out by."""
    layer = randomize_(OverlappingCrossAttention(8, 2, 4, overlap_ratio=1.0), 4).double()
    x = random_map(5, 1, 7, 9, 8, dtype=torch.float64)
    assert _max_diff(layer(x), reference(layer, x)) < 1e-10
    layer._outside_mask = lambda height, width, windows, like: _multiple_mask(layer, height, width, windows,
                                                                             like)
    assert _max_diff(layer(x), reference(layer, x)) > 1e-3


def _multiple_mask(layer, height, width, windows, like):
    """The mask of map rows/columns ``>= height / width`` only (a broken mask: keys above/left of the map and
    right of the padded map are let through)."""
    ws, ows = layer.window_size, layer.overlap_window_size
    before = (ows - ws) // 2
    rows = torch.arange(windows[0])[:, None] * ws - before + torch.arange(ows)
    cols = torch.arange(windows[1])[:, None] * ws - before + torch.arange(ows)
    bad = (rows >= height)[:, None, :, None] | (cols >= width)[None, :, None, :]
    bad = bad & (rows < windows[0] * ws)[:, None, :, None] & (cols < windows[1] * ws)[None, :, None, :]
    mask = torch.zeros(bad.shape, dtype=like.dtype).masked_fill(bad, float("-inf"))
    return mask.reshape(windows[0] * windows[1], 1, ows * ows)


def test_negative_control_transposed_offsets_fail():
    """A table indexed by query minus key instead of key minus query (Swin's direction)."""
    layer = randomize_(OverlappingCrossAttention(8, 2, 4, overlap_ratio=0.5), 2).double()
    x = random_map(3, 1, 8, 8, 8, dtype=torch.float64)
    ws, ows = layer.window_size, layer.overlap_window_size
    side = ws + ows - 1
    qy, qx = torch.arange(ws * ws) // ws, torch.arange(ws * ws) % ws
    ky, kx = torch.arange(ows * ows) // ows, torch.arange(ows * ows) % ows
    dy, dx = qy[:, None] - ky[None, :], qx[:, None] - kx[None, :]
    layer.relative_position_index = (dy + ows - 1) * side + (dx + ows - 1)
    assert _max_diff(layer(x), reference(layer, x)) > 1e-3


# ---------------------------------------------------------------------------------------------------------
# layout, state dict, modes


def test_state_dict_holds_hat_names_only():
    layer = OverlappingCrossAttention(12, 3, 4, overlap_ratio=0.5)
    shapes = {name: tuple(t.shape) for name, t in layer.state_dict().items()}
    assert shapes == {"qkv.weight": (36, 12), "qkv.bias": (36,), "relative_position_bias_table": (81, 3),
                      "proj.weight": (12, 12), "proj.bias": (12,)}
    assert layer.overlap_window_size == 6
    assert layer.position_bias().shape == (3, 16, 36)


def test_position_bias_reads_the_table_by_offset():
    """Entry [h, query, key] is the table row of the offset (key minus query, in window coordinates)."""
    layer = randomize_(OverlappingCrossAttention(4, 1, 3, overlap_ratio=1.0), 0)
    ws, ows = 3, 6
    side = ws + ows - 1
    bias = layer.position_bias()
    table = layer.relative_position_bias_table
    for query in range(ws * ws):
        for key in range(ows * ows):
            dy, dx = key // ows - query // ws, key % ows - query % ws
            assert bias[0, query, key] == table[(dy + ws - ows + 1) * side + dx + ws - ows + 1, 0]
    # equal offsets, equal bias; every row of the table is used
    assert bias[0, 0, 0] == bias[0, ws + 1, ows + 1]
    assert layer.relative_position_index.unique().numel() == side * side


def test_modes_agree_where_no_key_leaves_the_map():
    """Zero overlap (int(3 * 0.25) = 0) on a multiple of the window: nothing to pad, both modes are W-MSA."""
    masked = randomize_(OverlappingCrossAttention(6, 2, 3, overlap_ratio=0.25), 0).double()
    official = OverlappingCrossAttention(6, 2, 3, overlap_ratio=0.25, official_padding=True).double()
    official.load_state_dict(masked.state_dict())
    x = random_map(1, 2, 6, 9, 6, dtype=torch.float64)
    torch.testing.assert_close(masked(x), official(x), rtol=0, atol=0)


def test_large_map_blocks_match_one_call():
    layer = randomize_(OverlappingCrossAttention(8, 2, 4, overlap_ratio=0.5), 0)
    blocked = OverlappingCrossAttention(8, 2, 4, overlap_ratio=0.5, max_scores=2000)
    blocked.load_state_dict(layer.state_dict())
    x = random_map(0, 1, 33, 27, 8)
    torch.testing.assert_close(blocked(x), layer(x), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(window_size=0), "window_size must be a positive int"),
    (dict(window_size=2.5), "window_size must be a positive int"),
    (dict(window_size=(4, 4)), "window_size must be a positive int"),
    (dict(window_size=True), "window_size must be a positive int"),
    (dict(overlap_ratio=-0.5), "overlap_ratio must be a finite number >= 0"),
    (dict(overlap_ratio=float("nan")), "overlap_ratio must be a finite number >= 0"),
    (dict(overlap_ratio=float("inf")), "overlap_ratio must be a finite number >= 0"),
    (dict(overlap_ratio="0.5"), "overlap_ratio must be a number"),
    (dict(overlap_ratio=True), "overlap_ratio must be a number"),
    (dict(dim=10), "dim=10 is not divisible by num_heads=4"),
    (dict(num_heads=0), "num_heads must be a positive int"),
    (dict(max_scores=0), "max_scores must be a positive int"),
    (dict(backend="fast"), "unknown attention backend 'fast'"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    arguments = dict(dim=16, num_heads=4, window_size=4) | kwargs
    positional = [arguments.pop(name) for name in ("dim", "num_heads", "window_size")]
    with pytest.raises(ValueError, match=match):
        OverlappingCrossAttention(*positional, **arguments)


@pytest.mark.parametrize(("x", "match"), [
    (torch.randn(1, 8, 8, 12), "has 12 channels in its last dim, expected 16"),
    (torch.randn(8, 8, 16), "must be a 4-D channels-last feature map"),
    (torch.randn(1, 0, 8, 16), "must not be empty"),
    (torch.ones(1, 8, 8, 16, dtype=torch.int64), "must have a floating dtype"),
    (torch.randn(1, 8, 8, 16, dtype=torch.float64), "has dtype torch.float64 but the layer's weights are"),
])
def test_bad_inputs_raise_value_error(x, match):
    with pytest.raises(ValueError, match=match):
        OverlappingCrossAttention(16, 4, 4)(x)


# ---------------------------------------------------------------------------------------------------------
# the official OCAB (skipped without a checkout of XPixelGroup/HAT)


def _stub_basicsr() -> None:
    """The three names hat_arch.py imports from BasicSR."""
    if "basicsr.archs.arch_util" in sys.modules:
        return
    names = ("basicsr", "basicsr.utils", "basicsr.utils.registry", "basicsr.archs", "basicsr.archs.arch_util")
    modules = {name: types.ModuleType(name) for name in names}
    modules["basicsr.utils.registry"].ARCH_REGISTRY = types.SimpleNamespace(register=lambda: (lambda obj: obj))
    modules["basicsr.archs.arch_util"].to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    modules["basicsr.archs.arch_util"].trunc_normal_ = nn.init.trunc_normal_
    sys.modules.update(modules)


@functools.cache
def _hat_arch() -> types.ModuleType:
    _stub_basicsr()
    spec = importlib.util.spec_from_file_location("hat_arch_official", HAT_ARCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


needs_hat = pytest.mark.skipif(not HAT_ARCH.is_file(), reason=f"no checkout of XPixelGroup/HAT at {HAT_CHECKOUT} "
                               "(set HAT_CHECKOUT)")


def _hat_index(window: int, ratio: float) -> torch.Tensor:
    return _hat_arch().HAT.calculate_rpi_oca(types.SimpleNamespace(window_size=window, overlap_ratio=ratio))


# HAT's unfold gives as many key windows as query windows only when ows - ws is even
HAT_CASES = [(w, r) for w in (2, 3, 4, 5, 6, 8) for r in RATIOS if int(w * r) % 2 == 0]


@needs_hat
@pytest.mark.filterwarnings("ignore:torch.meshgrid")
@pytest.mark.parametrize("window", [2, 3, 4, 5, 6, 7, 8, 16])
@pytest.mark.parametrize("ratio", RATIOS)
def test_index_is_hats(window, ratio):
    """Same table row for every pair; HAT's index is negative for some pairs and wraps (torch indexing)."""
    layer = OverlappingCrossAttention(4, 1, window, overlap_ratio=ratio)
    rows = layer.relative_position_bias_table.shape[0]
    hat = _hat_index(window, ratio)
    assert torch.equal(hat % rows, layer.relative_position_index)
    table = torch.randn(rows, 3)
    assert torch.equal(table[hat.view(-1)], table[layer.relative_position_index.view(-1)])


def _hat_to_block(ocab_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OCAB's keys -> those of PreNorm(dim, OverlappingCrossAttention) then PreNorm(dim, Mlp): one to one."""
    prefixes = {"norm1.": "0.norm.", "qkv.": "0.fn.qkv.", "relative_position_bias_table": "0.fn.relative_position_"
                "bias_table", "proj.": "0.fn.proj.", "norm2.": "1.norm.", "mlp.": "1.fn."}
    out = {}
    for name, value in ocab_state.items():
        prefix = next(p for p in prefixes if name.startswith(p))
        out[prefixes[prefix] + name[len(prefix):]] = value
    return out


@needs_hat
@pytest.mark.filterwarnings("ignore:torch.meshgrid")
@given(case=st.sampled_from(HAT_CASES), heads=st.integers(1, 3), windows=st.tuples(st.integers(1, 3),
       st.integers(1, 3)), batch=st.integers(1, 2), seed=seeds)
def test_official_padding_matches_hat_ocab(case, heads, windows, batch, seed):
    """At window multiples: HAT's whole OCAB (norm1, attention, proj, residual, norm2, MLP, residual) equals
    PreNorm(OverlappingCrossAttention(official_padding=True)) then PreNorm(Mlp) with its weights, and HAT's
    attention alone (norm1 an identity, MLP output zeroed) equals the layer."""
    window, ratio = case
    dim = 4 * heads
    height, width = windows[0] * window, windows[1] * window
    torch.manual_seed(seed)
    ocab = _hat_arch().OCAB(dim, (height, width), window, ratio, heads).eval()
    randomize_(ocab, seed, std=0.3)
    layer = OverlappingCrossAttention(dim, heads, window, overlap_ratio=ratio, official_padding=True)
    block = nn.Sequential(PreNorm(dim, layer), PreNorm(dim, Mlp(dim, 2 * dim))).eval()
    block.load_state_dict(_hat_to_block(ocab.state_dict()), strict=True)
    x = random_map(seed, batch, height, width, dim)
    rpi = _hat_index(window, ratio)
    with torch.no_grad():
        theirs = ocab(x.reshape(batch, -1, dim), (height, width), rpi).reshape(x.shape)
        assert _max_diff(block(x), theirs) <= 1e-5
        ocab.norm1 = nn.Identity()
        nn.init.zeros_(ocab.mlp.fc2.weight)
        nn.init.zeros_(ocab.mlp.fc2.bias)
        attention_only = ocab(x.reshape(batch, -1, dim), (height, width), rpi).reshape(x.shape) - x
        assert _max_diff(layer(x), attention_only) <= 1e-5


@needs_hat
@pytest.mark.filterwarnings("ignore:torch.meshgrid")
def test_negative_control_masked_mode_differs_from_hat_ocab():
    """The HAT comparison tells the two modes apart: the masked layer (the default) is not HAT's OCAB."""
    dim, heads, window, ratio = 8, 2, 4, 0.5
    ocab = randomize_(_hat_arch().OCAB(dim, (8, 8), window, ratio, heads).eval(), 0, std=0.3)
    ocab.norm1 = nn.Identity()
    nn.init.zeros_(ocab.mlp.fc2.weight)
    nn.init.zeros_(ocab.mlp.fc2.bias)
    x = random_map(0, 1, 8, 8, dim)
    with torch.no_grad():
        attention_only = ocab(x.reshape(1, -1, dim), (8, 8), _hat_index(window, ratio)).reshape(x.shape) - x
        for official in (True, False):
            layer = OverlappingCrossAttention(dim, heads, window, overlap_ratio=ratio, official_padding=official)
            layer.load_state_dict({k: v for k, v in ocab.state_dict().items() if not k.startswith(("norm", "mlp"))})
            assert (_max_diff(layer(x), attention_only) <= 1e-5) == official

