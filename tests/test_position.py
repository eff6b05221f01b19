"""Position biases: values against explicit construction, the official HMANet width, and the eval cache."""

import pytest
import reference
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import randomize_, seeds

from gridattn import (
    ContinuousPositionBias,
    DynamicPositionBias,
    GridAttention,
    RelativePositionBias,
    WindowAttention,
)
from gridattn.layers.position import log_spaced_offsets, make_position_bias


@given(h=st.integers(1, 6), w=st.integers(1, 6), heads=st.integers(1, 4), seed=seeds)
def test_relative_position_bias_is_the_table_at_the_true_offset(h, w, heads, seed):
    module = randomize_(RelativePositionBias((h, w), heads), seed)
    bias = module((h, w))
    table = module.relative_position_bias_table
    assert bias.shape == (heads, h * w, h * w)
    tokens = [(y, x) for y in range(h) for x in range(w)]
    for n, (yn, xn) in enumerate(tokens):
        for m, (ym, xm) in enumerate(tokens):
            assert torch.equal(bias[:, n, m], table[(yn - ym + h - 1) * (2 * w - 1) + xn - xm + w - 1])


def _official_dynamic_bias(module: DynamicPositionBias, gh: int, gw: int) -> torch.Tensor:
    """The official HMANet construction (AffineTransform.forward): a table over the "mother set" of raw
    offsets, indexed by a Swin-style relative-position index."""
    dh = torch.arange(1 - gh, gh)
    dw = torch.arange(1 - gw, gw)
    biases = torch.stack(torch.meshgrid([dh, dw], indexing="ij")).flatten(1).transpose(0, 1).float()
    coords = torch.stack(torch.meshgrid([torch.arange(gh), torch.arange(gw)], indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += gh - 1
    rel[:, :, 1] += gw - 1
    rel[:, :, 0] *= 2 * gw - 1
    index = rel.sum(-1)
    pos = module.pos3(module.pos2(module.pos1(module.pos_proj(biases))))
    return pos[index.view(-1)].view(gh * gw, gh * gw, -1).permute(2, 0, 1)


@given(gh=st.integers(1, 6), gw=st.integers(1, 6), heads=st.integers(1, 4), hidden=st.integers(1, 8), seed=seeds)
def test_dynamic_position_bias_matches_official_construction_and_mlp_reference(gh, gw, heads, hidden, seed):
    module = randomize_(DynamicPositionBias(heads, hidden), seed)
    bias = module((gh, gw))
    torch.testing.assert_close(bias, _official_dynamic_bias(module, gh, gw))
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    offsets = torch.stack([ys[:, None] - ys[None, :], xs[:, None] - xs[None, :]], -1)
    expected = reference.dynamic_bias(module, offsets).permute(2, 0, 1).detach()  # float64
    torch.testing.assert_close(bias.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim", [16, 48, 64, 90, 96, 180, 200])
def test_grid_attention_bias_width_is_the_official_dim_over_4_over_4_but_at_least_4(dim):
    layer = GridAttention(dim, 3 if dim % 3 == 0 else 2, 4)
    assert layer.position_biases[0].pos_proj.out_features == max(4, dim // 4 // 4)


def _counting(module, monkeypatch):
    calls = []
    original = module._gather
    monkeypatch.setattr(module, "_gather", lambda size: calls.append(size) or original(size))
    return calls


def test_bias_is_computed_once_per_size_inside_bias_cache_and_every_time_outside(monkeypatch):
    from gridattn import bias_cache

    module = DynamicPositionBias(2, 4).eval()
    calls = _counting(module, monkeypatch)
    with torch.no_grad():
        module((3, 4))
        module((3, 4))
        assert calls == [(3, 4), (3, 4)]  # no cache by default: nothing can be stale
        with bias_cache(module):
            first = module((3, 4))
            assert module((3, 4)) is first
            module((5, 2))
            assert calls[2:] == [(3, 4), (5, 2)]
            module.train()((3, 4))  # training: computed afresh
            module.eval()
        assert len(module._cache) == 0  # dropped on exit
    with bias_cache(module):
        module((3, 4))  # with grad: computed afresh, so gradients can flow
    assert len(calls) == 6


def test_the_cache_does_not_read_the_weights_and_what_clears_it():
    """Inside the cache the weights are not compared (no GPU sync): an in-place edit is not seen until something
    clears the cache; loading a state dict, train/eval switches and leaving the block do."""
    from gridattn import bias_cache

    module = randomize_(DynamicPositionBias(2, 4), 0).eval()
    with torch.no_grad(), bias_cache(module):
        stale = module((3, 3)).clone()
        for p in module.parameters():
            p.data.mul_(-3)  # what an EMA update does
        assert torch.equal(module((3, 3)), stale)  # the promise was broken: the cache does not look
        module.eval()  # a mode switch clears it
        fresh = module((3, 3))
        torch.testing.assert_close(fresh, _official_dynamic_bias(module, 3, 3))
        module.load_state_dict({k: v + 1 for k, v in module.state_dict().items()})
        torch.testing.assert_close(module((3, 3)), _official_dynamic_bias(module, 3, 3))
    with torch.no_grad():
        for p in module.parameters():
            p.data.mul_(2)
        torch.testing.assert_close(module((3, 3)), _official_dynamic_bias(module, 3, 3))  # outside: always fresh


def test_set_bias_cache_and_the_context_restore_each_setting():
    from gridattn import GridAttention, bias_cache, set_bias_cache

    layer = GridAttention(8, 2, 3).eval()
    biases = list(layer.position_biases)
    assert not any(b._cache_enabled for b in biases)
    set_bias_cache(layer, True)
    with bias_cache(layer):
        assert all(b._cache_enabled for b in biases)
    assert all(b._cache_enabled for b in biases)  # it was on before the block
    set_bias_cache(layer, False)
    with bias_cache(layer):
        pass
    assert not any(b._cache_enabled for b in biases)


def test_optimiser_steps_are_seen_outside_the_cache():
    """Fused optimisers do not bump tensor versions; outside the cache every forward reads the weights."""
    module = randomize_(DynamicPositionBias(2, 4), 0).eval()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.5, fused=True)
    module((3, 3)).sum().backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(module((3, 3)), _official_dynamic_bias(module, 3, 3))

    table = RelativePositionBias(2, 2)
    optimizer = torch.optim.SGD(table.parameters(), lr=1.0)
    with torch.no_grad():
        stale = table.eval()(2).clone()
    table.train()(2).sum().backward()
    optimizer.step()
    with torch.no_grad():
        assert not torch.equal(stale, table.eval()(2))
        assert torch.equal(table(2), table.relative_position_bias_table[reference_index(2)].permute(2, 0, 1))


def reference_index(size):
    coords = [(y, x) for y in range(size) for x in range(size)]
    return torch.tensor([[(a[0] - b[0] + size - 1) * (2 * size - 1) + a[1] - b[1] + size - 1 for b in coords]
                         for a in coords])


def test_cache_is_keyed_by_size_device_dtype_and_autocast_and_bounded_and_not_pickled():
    import pickle

    from gridattn import bias_cache

    module = DynamicPositionBias(2, 4).eval()
    with torch.no_grad(), bias_cache(module):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert module((3, 3)).dtype == torch.bfloat16
        assert module((3, 3)).dtype == torch.float32
        assert module.double()((3, 3)).dtype == torch.float64
        module.float()
        for size in range(1, 20):
            assert module((size, 2)).shape == (2, 2 * size, 2 * size)
        assert len(module._cache) == 8
        assert len(pickle.loads(pickle.dumps(module))._cache) == 0


@pytest.mark.parametrize("layer_cls", ["window", "grid"])
def test_training_works_after_a_forward_in_inference_mode(layer_cls):
    from gridattn import GridAttention, WindowAttention

    layer = WindowAttention(8, 2, 4, shift=2) if layer_cls == "window" else GridAttention(8, 2, 3)
    x = torch.randn(1, 7, 9, 8)
    with torch.inference_mode():
        layer.eval()(x)
    layer.train()(x).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_vmap_over_stacked_weights_in_eval():
    """Model ensembling with torch.func: the cache steps aside under functorch transforms."""
    from gridattn import GridAttention

    models = [GridAttention(8, 2, 3).eval() for _ in range(2)]
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models])
              for k, _ in models[0].named_parameters()}
    x = torch.randn(1, 6, 6, 8)
    with torch.no_grad():
        stacked = torch.func.vmap(lambda p: torch.func.functional_call(models[0], p, (x,)))(params)
        for i, model in enumerate(models):
            torch.testing.assert_close(stacked[i], model(x), rtol=1e-5, atol=1e-5)


def _token_offsets(h: int, w: int) -> torch.Tensor:
    """Offsets (query minus key) of every token pair of an ``h x w`` group in raster order: ``(N, N, 2)``."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return torch.stack([ys[:, None] - ys[None, :], xs[:, None] - xs[None, :]], -1)


_styles = st.one_of(
    st.just(("maxvit", None)),
    st.just(("swinv2", None)),
    st.tuples(st.just("swinv2"), st.one_of(st.integers(1, 9), st.tuples(st.integers(1, 9), st.integers(1, 9)))),
)


@given(gh=st.integers(1, 7), gw=st.integers(1, 7), heads=st.integers(1, 4), hidden=st.integers(1, 16),
       style=_styles, seed=seeds)
def test_continuous_position_bias_matches_reference_at_every_offset(gh, gw, heads, hidden, style, seed):
    """MaxViT ``rmlp`` (natural-log offsets, biased last Linear) and Swin V2 (offsets over the pretrained window or,
    without one, over the group's own size; ``16 * sigmoid``, no last bias), every token pair."""
    style, pretrained = style
    module = ContinuousPositionBias(heads, hidden, style=style, pretrained_window_size=pretrained)
    assert (module.fc2.bias is None) == (style == "swinv2")
    module = randomize_(module, seed).double()
    expected = reference.position_bias(module, _token_offsets(gh, gw), (gh, gw)).permute(2, 0, 1)
    bias = module((gh, gw))
    assert bias.shape == (heads, gh * gw, gh * gw) and bias.dtype == torch.float64
    torch.testing.assert_close(bias, expected, rtol=1e-9, atol=1e-9)
    dy, dx = torch.meshgrid(torch.arange(1 - gh, gh), torch.arange(1 - gw, gw), indexing="ij")  # table rows
    rows = reference.position_bias(module, torch.stack([dy.flatten(), dx.flatten()], -1), (gh, gw))
    torch.testing.assert_close(module.table((gh, gw)), rows, rtol=1e-9, atol=1e-9)
    if style == "swinv2":
        assert bool(((bias > 0) & (bias < 16)).all())


def test_log_spaced_offsets_explicit_values():
    """MaxViT: sign(d) ln(1 + |d|); Swin V2 over a window of 8 (and 5 columns): sign * log2(1 + 8|d| / 7) / 3."""
    import math

    maxvit = log_spaced_offsets((2, 3))  # rows (dy, dx): dy in -1..1, dx in -2..2
    assert maxvit.shape == (15, 2) and maxvit.dtype == torch.float32
    torch.testing.assert_close(maxvit[0], torch.tensor([-math.log(2), -math.log(3)]))
    torch.testing.assert_close(maxvit[7], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(maxvit[14], torch.tensor([math.log(2), math.log(3)]))
    swin = log_spaced_offsets((8, 5), normalize_by=(8, 5))
    edge = math.log2(9) / 3  # the window's extreme offsets: 8 * 7 / 7 = 8 -> log2(1 + 8) / 3, about 1.06
    torch.testing.assert_close(swin[0], torch.tensor([-edge, -edge]))
    torch.testing.assert_close(swin[-1], torch.tensor([edge, edge]))
    torch.testing.assert_close(swin[9 * 7 + 4 + 1], torch.tensor([0.0, math.log2(1 + 8 / 4) / 3]))  # (0, 1)


@given(window=st.tuples(st.integers(1, 6), st.integers(1, 6)), data=st.data(), heads=st.integers(1, 3), seed=seeds)
def test_relative_position_bias_on_a_smaller_group_is_the_table_at_the_true_offsets(window, data, heads, seed):
    """A group clipped below the window reads the rows of the offsets it contains from the full table."""
    h, w = window
    gh, gw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    module = randomize_(RelativePositionBias(window, heads), seed)
    table = module.relative_position_bias_table
    bias = module((gh, gw))
    assert bias.shape == (heads, gh * gw, gh * gw)
    offsets = _token_offsets(gh, gw)
    expected = table[(offsets[..., 0] + h - 1) * (2 * w - 1) + offsets[..., 1] + w - 1].permute(2, 0, 1)
    assert torch.equal(bias, expected)
    dy, dx = torch.meshgrid(torch.arange(1 - gh, gh), torch.arange(1 - w, w)[w - gw:w + gw - 1], indexing="ij")
    assert torch.equal(module.table((gh, gw)), table[((dy + h - 1) * (2 * w - 1) + dx + w - 1).flatten()])


@pytest.mark.parametrize("group", [(5, 4), (4, 5), (9, 9)])
def test_relative_position_bias_refuses_a_group_larger_than_its_window(group):
    module = RelativePositionBias(4, 2)
    with pytest.raises(ValueError, match=rf"4x4 windows has no bias for {group[0]}x{group[1]} groups"):
        module(group)
    with pytest.raises(ValueError, match="no bias for"):
        module.table(group)
    layer = GridAttention(4, 2, grid_size=4, position_bias="table")
    layer.position_biases[0] = RelativePositionBias(3, 2)  # a table too small for the 4x4 groups
    with pytest.raises(ValueError, match="3x3 windows has no bias for 4x4 groups"):
        layer(torch.randn(1, 8, 8, 4))


def test_make_position_bias_kinds_and_errors():
    assert isinstance(make_position_bias("table", num_heads=2, attention_dim=8, window_size=3), RelativePositionBias)
    dynamic = make_position_bias("dynamic", num_heads=2, attention_dim=96)
    assert isinstance(dynamic, DynamicPositionBias) and dynamic.pos_proj.out_features == 6
    continuous = make_position_bias("continuous", num_heads=2, attention_dim=8)
    assert isinstance(continuous, ContinuousPositionBias) and continuous.fc1.out_features == 512
    assert continuous.style == "maxvit"
    assert make_position_bias("none", num_heads=2, attention_dim=8) is None
    with pytest.raises(ValueError, match="position_bias must be one of 'table', 'dynamic', 'continuous', 'none'"):
        make_position_bias("rmlp", num_heads=2, attention_dim=8)
    with pytest.raises(ValueError, match="needs a fixed group size"):
        make_position_bias("table", num_heads=2, attention_dim=8)
    with pytest.raises(ValueError, match="needs a fixed group size"):
        GridAttention(8, 2, interval=3, position_bias="table")
    with pytest.raises(ValueError, match="position_bias must be one of"):
        WindowAttention(8, 2, 4, position_bias="learned")
    with pytest.raises(ValueError, match="position_bias must be one of"):
        GridAttention(8, 2, grid_size=4, position_bias="")
    with pytest.raises(ValueError, match="style"):
        ContinuousPositionBias(2, 8, style="swin")


@pytest.mark.parametrize("grid", [dict(), dict(interval=3, grid_size=4), dict(interval=None, grid_size=None)])
def test_grid_attention_needs_exactly_one_of_interval_and_grid_size(grid):
    with pytest.raises(ValueError, match="exactly one of interval= .* and grid_size="):
        GridAttention(8, 2, **grid)


def test_out_proj_false_needs_the_attention_width_to_be_dim():
    with pytest.raises(ValueError, match=r"out_proj=False needs num_heads \* head_dim == dim, got 2 \* 3 != 8"):
        GridAttention(8, 2, 3, head_dim=3, out_proj=False)
    layer = GridAttention(8, 2, 3, head_dim=4, out_proj=False)  # 2 * 4 == 8: accepted
    assert isinstance(layer.proj, torch.nn.Identity)


def test_layers_without_position_bias_have_no_bias_parameters():
    window = WindowAttention(8, 2, 4, position_bias="none")
    assert window.relative_position_bias is None
    assert set(window.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    for two_stage in (True, False):
        grid = GridAttention(8, 2, grid_size=4, two_stage=two_stage, position_bias="none")
        assert len(grid.position_biases) == 0
        expected = {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
        expected |= {"grid_proj.weight", "grid_proj.bias"} if two_stage else set()
        assert set(grid.state_dict()) == expected


def test_default_state_dict_keys_are_unchanged():
    """HMANet checkpoints (and Swin-style window layers) load by these names."""
    assert list(WindowAttention(8, 2, 4).state_dict()) == [
        "qkv.weight", "qkv.bias", "relative_position_bias.relative_position_bias_table", "proj.weight", "proj.bias"]
    mlp = ["pos_proj.weight", "pos_proj.bias"] + [f"pos{i}.{j}.{p}" for i in (1, 2, 3) for j in (0, 2)
                                                  for p in ("weight", "bias")]
    assert list(GridAttention(8, 2, 3).state_dict()) == [
        "qkv.weight", "qkv.bias", "grid_proj.weight", "grid_proj.bias",
        *[f"position_biases.{b}.{key}" for b in (0, 1) for key in mlp], "proj.weight", "proj.bias"]
    assert list(GridAttention(8, 2, 3, out_proj=False).state_dict())[-1] == "position_biases.1.pos3.2.bias"
    one_stage = GridAttention(8, 2, grid_size=7, two_stage=False, position_bias="table")
    assert list(one_stage.state_dict()) == [
        "qkv.weight", "qkv.bias", "position_biases.0.relative_position_bias_table", "proj.weight", "proj.bias"]
    assert one_stage.position_biases[0].relative_position_bias_table.shape == (13 * 13, 2)


def test_a_pretrained_window_is_refused_where_it_would_be_ignored():
    from gridattn import ContinuousPositionBias

    with pytest.raises(ValueError, match="style='maxvit' does not use it"):
        ContinuousPositionBias(2, 8, style="maxvit", pretrained_window_size=7)


def _fixed_table_bias(table: torch.Tensor, window):
    """A user's own PositionBias without weights: a fixed table held in a buffer."""
    from gridattn.layers import PositionBias

    class Fixed(PositionBias):
        def __init__(self):
            super().__init__()
            self.num_heads = table.shape[1]
            self.register_buffer("rows", table.detach().clone())

        def table(self, group_size):
            assert tuple(group_size) == tuple(window)
            return self.rows

    return Fixed()


@pytest.mark.parametrize("layer_kind", ["window", "grid"])
def test_a_custom_position_bias_without_weights_plugs_into_both_layers(layer_kind):
    """The interface is all a layer needs: a weight-free subclass equal to a learned table gives the same output,
    also through the memory-bounded blocked path and inside bias_cache."""
    from gridattn import GridAttention, WindowAttention, bias_cache

    if layer_kind == "window":
        make = lambda bound: WindowAttention(8, 2, 4, 2, max_scores=bound)  # noqa: E731
    else:
        make = lambda bound: GridAttention(8, 2, grid_size=4, two_stage=False, position_bias="table",  # noqa: E731
                                           max_scores=bound)
    learned = randomize_(make(2**24), 1).double().eval()
    custom = make(7)  # a small bound: the grid layer attends in blocks of queries (bias_rows of the table)
    custom.load_state_dict(learned.state_dict())
    custom = custom.double().eval()
    if layer_kind == "window":
        custom.relative_position_bias = _fixed_table_bias(learned.relative_position_bias.relative_position_bias_table,
                                                          (4, 4))
    else:
        custom.position_biases[0] = _fixed_table_bias(learned.position_biases[0].relative_position_bias_table, (4, 4))
    assert not any("bias_table" in name for name, _ in custom.named_parameters())
    x = torch.randn(2, 11, 13, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = learned(x)
        torch.testing.assert_close(custom(x), expected, rtol=1e-12, atol=1e-12)
        with bias_cache(custom):
            torch.testing.assert_close(custom(x), expected, rtol=1e-12, atol=1e-12)
