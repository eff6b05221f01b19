"""Every layer against the independent float64 reference of tests/reference.py, on any size."""

import pytest
import reference
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import feature_maps, random_map, randomize_, seeds

from gridattn import (
    AdaptiveInteraction,
    ChannelAttention,
    ChannelSelfAttention,
    ConvChannelAttention,
    FusedConv,
    GridAttention,
    Mlp,
    PostNorm,
    PreNorm,
    RectangleWindowAttention,
    SpatialGateMlp,
    WindowAttention,
)

CPU_BACKENDS = ["sdpa", "math"]


@st.composite
def window_layers(draw):
    heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    window = draw(st.one_of(st.integers(1, 8), st.tuples(st.integers(1, 8), st.integers(1, 8))))
    pair = (window, window) if isinstance(window, int) else window
    shift = draw(st.tuples(st.integers(0, pair[0] - 1), st.integers(0, pair[1] - 1)))
    # max_scores: 2**24 sums bias and mask for all windows at once; small bounds force blocks of windows
    return heads * head_dim, heads, window, shift, draw(st.sampled_from([2**24, 1, 100]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(spec=window_layers(), seed=seeds, data=st.data())
def test_window_attention_matches_reference(spec, seed, data, backend):
    dim, heads, window, shift, max_scores = spec
    layer = WindowAttention(dim, heads, window, shift, backend=backend, max_scores=max_scores)
    layer = randomize_(layer, seed).double()
    x = random_map(*data.draw(feature_maps(dim)), dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.window_attention(layer, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shift", [0, 4])
@given(seed=seeds, data=st.data())
def test_window_attention_float32_close_to_float64_reference(shift, seed, data):
    layer = randomize_(WindowAttention(12, 3, 8, shift), seed, std=0.2)
    x = random_map(*data.draw(feature_maps(12, max_size=20)))
    torch.testing.assert_close(layer(x).double(), reference.window_attention(layer, x), rtol=1e-4, atol=1e-4)


def _swin_classic(layer: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """SW-MSA exactly as Swin writes it, for sizes that are multiples of the window: cyclic roll, window
    partition by reshape, the 3x3-region mask built from slices (filled with -100), roll back."""
    batch, height, width, dim = x.shape
    ws, s, heads = layer.window_size[0], layer.shift[0], layer.num_heads
    x = torch.roll(x, (-s, -s), (1, 2))
    mask = reference.swin_region_mask(height, width, ws, s)  # (nW, N, N)
    windows = lambda t: reference.swin_windows(t, ws)  # noqa: E731
    table = layer.relative_position_bias.relative_position_bias_table
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    bias = table[(rel[0] + ws - 1) * (2 * ws - 1) + rel[1] + ws - 1].permute(2, 0, 1)  # (heads, N, N)
    qkv = windows(layer.qkv(x)).reshape(-1, ws * ws, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (dim // heads) ** -0.5) @ k.transpose(-2, -1) + bias
    num_windows = mask.shape[0]
    attn = attn.view(batch, num_windows, heads, ws * ws, ws * ws) + mask[None, :, None]
    out = (attn.view(-1, heads, ws * ws, ws * ws).softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, dim)
    out = (out.view(batch, height // ws, width // ws, ws, ws, dim).permute(0, 1, 3, 2, 4, 5)
           .reshape(batch, height, width, dim))
    return layer.proj(torch.roll(out, (s, s), (1, 2)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(seed=seeds, batch=st.integers(1, 2), windows_h=st.integers(1, 3), windows_w=st.integers(1, 3),
       window=st.sampled_from([2, 4, 6]))
def test_shifted_window_attention_matches_classic_swin(seed, batch, windows_h, windows_w, window, backend):
    """Sizes that are multiples of the window need no padding: the result is the classic SW-MSA."""
    layer = randomize_(WindowAttention(8, 2, window, window // 2, backend=backend), seed).double()
    x = random_map(seed, batch, windows_h * window, windows_w * window, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _swin_classic(layer, x), rtol=1e-9, atol=1e-9)


@st.composite
def grid_layers(draw):
    heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    interval = draw(st.one_of(st.integers(1, 5), st.tuples(st.integers(1, 5), st.integers(1, 5))))
    # max_scores: 2**24 builds whole biases; the small bounds force blocks of queries (down to one query)
    return heads * head_dim, heads, interval, draw(st.integers(1, 4)), draw(st.sampled_from([2**24, 1, 7, 60]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("two_stage", [True, False])
@given(spec=grid_layers(), seed=seeds, data=st.data())
def test_grid_attention_matches_reference(spec, seed, data, two_stage, backend):
    dim, heads, interval, bias_dim, max_scores = spec
    layer = GridAttention(dim, heads, interval, two_stage=two_stage, bias_hidden_dim=bias_dim, backend=backend,
                          max_scores=max_scores)
    layer = randomize_(layer, seed).double()
    x = random_map(*data.draw(feature_maps(dim, max_size=14)), dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.grid_attention(layer, x), rtol=1e-9, atol=1e-9)


@given(seed=seeds, data=st.data())
def test_grid_attention_in_dim_and_no_projection(seed, data):
    """HMANet's configuration: 2x wider input than attention channels, no output projection."""
    layer = randomize_(GridAttention(12, 3, 4, in_dim=24, out_proj=False), seed).double()
    x = random_map(*data.draw(feature_maps(24, max_size=12)), dtype=torch.float64)
    out = layer(x)
    assert out.shape == (*x.shape[:3], 12)
    torch.testing.assert_close(out, reference.grid_attention(layer, x), rtol=1e-9, atol=1e-9)


@given(seed=seeds, data=st.data(), max_scores=st.integers(1, 400))
def test_grid_attention_in_blocks_has_the_same_gradients(seed, data, max_scores):
    """The memory-bounded path (blocks of queries, bias built per block) trains like the whole-bias path."""
    whole = randomize_(GridAttention(12, 3, 3), seed).double().train()
    blocks = randomize_(GridAttention(12, 3, 3, max_scores=max_scores), seed).double().train()
    x = random_map(*data.draw(feature_maps(12, max_size=11)), dtype=torch.float64)
    assert_same_training(whole, blocks, x, seed)


def assert_same_training(whole, blocks, x, seed):
    """Equal outputs, input gradients and parameter gradients (both None, or close) of two layers on ``x``."""
    grad_out = torch.randn(*x.shape[:3], whole.dim, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(seed))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.testing.assert_close(blocks(x2), whole(x1), rtol=1e-10, atol=1e-10)
    whole(x1).backward(grad_out)
    blocks(x2).backward(grad_out)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-9, atol=1e-10)
    for (name, a), b in zip(whole.named_parameters(), blocks.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-10, msg=name)


@given(seed=seeds, data=st.data())
def test_grid_attention_float32_close_to_float64_reference(seed, data):
    layer = randomize_(GridAttention(12, 3, 4), seed, std=0.2)
    x = random_map(*data.draw(feature_maps(12, max_size=20)))
    torch.testing.assert_close(layer(x).double(), reference.grid_attention(layer, x), rtol=1e-4, atol=1e-4)


@given(seed=seeds, data=st.data(), dim=st.integers(1, 24), reduction=st.integers(1, 8),
       act=st.sampled_from([torch.nn.ReLU, torch.nn.SiLU]))
def test_channel_attention_matches_reference(seed, data, dim, reduction, act):
    layer = randomize_(ChannelAttention(dim, reduction, act_layer=act), seed).double()
    x = random_map(*data.draw(feature_maps(dim)), dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.channel_attention(layer, x), rtol=1e-9, atol=1e-9)


@given(seed=seeds, data=st.data(), dim=st.integers(1, 12), compress=st.integers(1, 4))
def test_conv_channel_attention_matches_reference(seed, data, dim, compress):
    layer = randomize_(ConvChannelAttention(dim, compress, reduction=2), seed, std=0.3).double()
    x = random_map(*data.draw(feature_maps(dim, max_size=10)), dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.conv_channel_attention(layer, x), rtol=1e-9, atol=1e-9)


@given(seed=seeds, data=st.data(), dim=st.integers(1, 8), expand=st.integers(1, 4), se_reduction=st.integers(1, 4))
def test_fused_conv_matches_reference(seed, data, dim, expand, se_reduction):
    layer = randomize_(FusedConv(dim, expand, se_reduction), seed, std=0.3).double()
    x = random_map(*data.draw(feature_maps(dim, max_size=10)), dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.fused_conv(layer, x), rtol=1e-9, atol=1e-9)


@given(seed=seeds, data=st.data(), dim=st.integers(1, 12), hidden=st.integers(1, 24))
def test_mlp_and_residual_wrappers_match_reference(seed, data, dim, hidden):
    x = random_map(*data.draw(feature_maps(dim)), dtype=torch.float64)
    mlp = randomize_(Mlp(dim, hidden), seed).double()
    expected_mlp = reference.linear(reference.gelu(reference.linear(x, mlp.fc1)), mlp.fc2)
    torch.testing.assert_close(mlp(x), expected_mlp, rtol=1e-9, atol=1e-9)

    pre = randomize_(PreNorm(dim, Mlp(dim, hidden)), seed).double()
    expected_pre = x + reference.linear(
        reference.gelu(reference.linear(reference.layer_norm(x, pre.norm), pre.fn.fc1)), pre.fn.fc2
    )
    torch.testing.assert_close(pre(x), expected_pre, rtol=1e-9, atol=1e-9)

    post = randomize_(PostNorm(dim, Mlp(dim, hidden)), seed).double()
    expected_post = x + reference.layer_norm(
        reference.linear(reference.gelu(reference.linear(x, post.fn.fc1)), post.fn.fc2), post.norm
    )
    torch.testing.assert_close(post(x), expected_post, rtol=1e-9, atol=1e-9)


# Corner cases pinned (every run, whatever hypothesis draws): a 1x1 map, maps smaller than the window or
# interval, shifts along one axis only, and maximal padding (one pixel past a multiple: almost a whole
# window or group of padding).
CORNER_SIZES = [(1, 1), (3, 2), (1, 9), (9, 1), (5, 5), (9, 9)]  # window / interval 4: 9 = 2 * 4 + 1


@pytest.mark.parametrize("size", CORNER_SIZES)
@pytest.mark.parametrize("shift", [(0, 0), (2, 0), (0, 3), (2, 2)])
def test_window_attention_corner_cases(size, shift):
    layer = randomize_(WindowAttention(6, 2, 4, shift, max_scores=50), 3).double()
    x = random_map(5, 2, *size, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.window_attention(layer, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("size", CORNER_SIZES)
@pytest.mark.parametrize("two_stage", [True, False])
def test_grid_attention_corner_cases(size, two_stage):
    layer = randomize_(GridAttention(6, 2, 4, two_stage=two_stage, max_scores=7), 4).double()
    x = random_map(6, 2, *size, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.grid_attention(layer, x), rtol=1e-9, atol=1e-9)


@given(seed=seeds, data=st.data(), shift=st.integers(0, 3))
def test_residual_wrappers_around_window_attention_match_reference(seed, data, shift):
    """PreNorm: ``x + attn(LN(x))``; PostNorm: ``x + LN(attn(x))`` (HMANet's GAB MLP), attention by the
    window-attention reference."""
    x = random_map(*data.draw(feature_maps(6, max_size=11)), dtype=torch.float64)
    pre = randomize_(PreNorm(6, WindowAttention(6, 2, 4, shift)), seed).double()
    expected = x + reference.window_attention(pre.fn, reference.layer_norm(x, pre.norm))
    torch.testing.assert_close(pre(x), expected, rtol=1e-9, atol=1e-9)
    post = randomize_(PostNorm(6, WindowAttention(6, 2, 4, shift)), seed).double()
    expected = x + reference.layer_norm(reference.window_attention(post.fn, x), post.norm)
    torch.testing.assert_close(post(x), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_path_follows_its_definition(p):
    """Stochastic depth: in training each sample's branch is 0 with probability p, else x / (1 - p), one draw
    per sample; the identity in eval and at p = 0. The kept share of 4000 samples lies within 4.5 binomial
    standard deviations of 1 - p."""
    from gridattn import DropPath

    torch.manual_seed(0)
    x = torch.rand(4000, 3, 5, dtype=torch.float64) + 0.5  # no zero entries: a kept sample is recognisable
    layer = DropPath(p).train()
    out = layer(x.requires_grad_())
    kept = (out != 0).all(dim=(1, 2))
    dropped = (out == 0).all(dim=(1, 2))
    assert bool((kept | dropped).all()), "a sample was partly dropped"
    torch.testing.assert_close(out[kept], x[kept] / (1 - p), rtol=0, atol=0)
    share, sigma = kept.double().mean().item(), (p * (1 - p) / len(x)) ** 0.5
    assert abs(share - (1 - p)) < 4.5 * sigma, (share, 1 - p)
    out.sum().backward()  # the gradient is the same mask and scale
    torch.testing.assert_close(x.grad, kept[:, None, None].double().expand_as(x) / (1 - p), rtol=0, atol=0)
    assert torch.equal(layer.eval()(x), x) and torch.equal(DropPath(0.0).train()(x), x)


# Every position-bias kind, an attention width (num_heads * head_dim) other than dim, an input width other than
# dim, and MaxViT's fixed grid (grid_size=G: interval ceil(H / G) per map).
BIAS_KINDS = ["table", "dynamic", "continuous", "none"]


@st.composite
def _widths(draw):
    """(dim, in_dim, heads, head_dim) with head_dim != dim // heads (dim need not be a multiple of heads)."""
    heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    dim = draw(st.integers(1, 10).filter(lambda d: d // heads != head_dim))
    return dim, draw(st.integers(1, 10)), heads, head_dim


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", BIAS_KINDS)
@given(widths=_widths(), window=st.one_of(st.integers(1, 6), st.tuples(st.integers(1, 6), st.integers(1, 6))),
       hidden=st.one_of(st.none(), st.integers(1, 6)), max_scores=st.sampled_from([2**24, 1, 100]), seed=seeds,
       data=st.data())
def test_window_attention_every_bias_and_head_dim_matches_reference(widths, window, hidden, max_scores, seed, data,
                                                                     kind, backend):
    dim, in_dim, heads, head_dim = widths
    pair = (window, window) if isinstance(window, int) else window
    shift = data.draw(st.tuples(st.integers(0, pair[0] - 1), st.integers(0, pair[1] - 1)))
    layer = WindowAttention(dim, heads, window, shift, in_dim=in_dim, head_dim=head_dim, position_bias=kind,
                            bias_hidden_dim=hidden, backend=backend, max_scores=max_scores)
    layer = randomize_(layer, seed).double()
    assert layer.qkv.out_features == 3 * heads * head_dim and layer.proj.in_features == heads * head_dim
    x = random_map(*data.draw(feature_maps(in_dim, max_size=12)), dtype=torch.float64)
    out = layer(x)
    assert out.shape == (*x.shape[:3], dim)
    torch.testing.assert_close(out, reference.window_attention(layer, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(widths=_widths(), window=st.integers(1, 6), key_bias=st.booleans(), qkv_bias=st.booleans(),
       max_scores=st.sampled_from([2**24, 1, 100]), seed=seeds, data=st.data())
def test_swin_v2_window_attention_matches_reference(widths, window, key_bias, qkv_bias, max_scores, seed, data,
                                                    backend):
    """Swin V2: cosine attention with a capped learned temperature (some drawn above the cap), query and value
    biases without a key bias, the Swin V2 position MLP."""
    from gridattn import ContinuousPositionBias

    dim, in_dim, heads, head_dim = widths
    shift = data.draw(st.integers(0, window - 1))
    layer = WindowAttention(dim, heads, window, shift, in_dim=in_dim, head_dim=head_dim, qkv_bias=qkv_bias,
                            key_bias=key_bias, cosine=True, position_bias="none", backend=backend,
                            max_scores=max_scores)
    layer.relative_position_bias = ContinuousPositionBias(heads, 8, style="swinv2",
                                                          pretrained_window_size=data.draw(st.integers(2, 9)))
    layer = randomize_(layer, seed, std=2.0).double()  # std 2: some exp(logit_scale) beyond the cap of 100
    assert (layer.q_bias is not None) == (qkv_bias and not key_bias)
    assert (layer.qkv.bias is not None) == (qkv_bias and key_bias)
    x = random_map(*data.draw(feature_maps(in_dim, max_size=12)), dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.window_attention(layer, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("key_bias", [True, False])
def test_cosine_window_attention_under_bfloat16_autocast(key_bias):
    """The float32 temperature must not promote bfloat16 queries under autocast (q, k, v must share a dtype)."""
    layer = randomize_(WindowAttention(16, 2, 4, 2, cosine=True, key_bias=key_bias), 0, std=0.3)
    x = random_map(1, 2, 9, 7, 16)
    expected = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


@st.composite
def _grids(draw, kind):
    """interval= or grid_size= (int or pair); "table" needs grid_size."""
    size = st.one_of(st.integers(1, 5), st.tuples(st.integers(1, 5), st.integers(1, 5)))
    if kind == "table" or draw(st.booleans()):
        return dict(grid_size=draw(size))
    return dict(interval=draw(size))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("two_stage", [True, False])
@pytest.mark.parametrize("kind", BIAS_KINDS)
@given(widths=_widths(), hidden=st.one_of(st.none(), st.integers(1, 6)),
       max_scores=st.sampled_from([2**24, 1, 7, 60]), seed=seeds, data=st.data())
def test_grid_attention_every_bias_and_grid_matches_reference(widths, hidden, max_scores, seed, data, kind,
                                                              two_stage, backend):
    """Maps of any size against interval= or grid_size=: multiples of G, not multiples (padding), smaller than G;
    small max_scores force blocks of queries (with the padding mask alone for "none")."""
    dim, in_dim, heads, head_dim = widths
    grid = data.draw(_grids(kind))
    layer = GridAttention(dim, heads, **grid, in_dim=in_dim, head_dim=head_dim, two_stage=two_stage,
                          position_bias=kind, bias_hidden_dim=hidden, backend=backend, max_scores=max_scores)
    layer = randomize_(layer, seed).double()
    x = random_map(*data.draw(feature_maps(in_dim, max_size=13)), dtype=torch.float64)
    out = layer(x)
    assert out.shape == (*x.shape[:3], dim)
    torch.testing.assert_close(out, reference.grid_attention(layer, x), rtol=1e-9, atol=1e-9)


# grid_size 4: maps that are multiples, one past a multiple (interval 3, groups 3x3 with padding), smaller than G
# (interval 1), 4x13 (interval 1 x 4) and 9x9 / 13x5 (interval 3 x 2 / 4 x 2: groups smaller than G).
GRID_SIZE_CORNERS = [(1, 1), (3, 2), (4, 4), (8, 12), (4, 13), (9, 9), (13, 5)]


@pytest.mark.parametrize("size", GRID_SIZE_CORNERS)
@pytest.mark.parametrize("two_stage", [True, False])
@pytest.mark.parametrize("kind", BIAS_KINDS)
def test_grid_attention_grid_size_corner_cases(size, two_stage, kind):
    layer = GridAttention(5, 2, grid_size=4, head_dim=3, in_dim=7, two_stage=two_stage, position_bias=kind,
                          bias_hidden_dim=6, max_scores=7)
    layer = randomize_(layer, 8).double()
    x = random_map(9, 2, *size, 7, dtype=torch.float64)
    expected = reference.grid_attention(layer, x)
    torch.testing.assert_close(layer(x), expected, rtol=1e-9, atol=1e-9)
    with torch.no_grad():  # eval: biases cached per group size
        layer.eval()
        for _ in range(2):
            torch.testing.assert_close(layer(x), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("pretrained", [None, 5])
def test_layers_with_a_swin_v2_bias_match_reference(pretrained):
    """A Swin V2 continuous bias put in place of the default: normalised by its pretrained window, or by the
    window / nominal group size (grid: ceil(H / interval)) when it has none."""
    from gridattn import ContinuousPositionBias

    swin_v2 = lambda: ContinuousPositionBias(2, 6, style="swinv2", pretrained_window_size=pretrained)  # noqa: E731
    window = WindowAttention(6, 2, (4, 3), (2, 1), max_scores=40)
    window.relative_position_bias = swin_v2()
    window = randomize_(window, 1).double()
    x = random_map(2, 2, 9, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(window(x), reference.window_attention(window, x), rtol=1e-9, atol=1e-9)
    for max_scores in (2**24, 7):
        grid = GridAttention(6, 2, interval=(3, 2), max_scores=max_scores)
        grid.position_biases = torch.nn.ModuleList([swin_v2(), swin_v2()])
        grid = randomize_(grid, 3).double()
        torch.testing.assert_close(grid(x), reference.grid_attention(grid, x), rtol=1e-9, atol=1e-9)


def _maxvit_grid_attention(layer: GridAttention, x: torch.Tensor) -> torch.Tensor:
    """One-stage grid attention as timm's MaxViT writes it, for maps that are multiples of the grid: the
    ``grid_partition`` / ``grid_reverse`` reshapes, a learned table indexed by explicit coordinates, plain
    softmax attention per group."""
    batch, height, width, _ = x.shape
    (gh, gw), heads, d = layer.grid_size, layer.num_heads, layer.head_dim
    qkv = layer.qkv(x)
    channels = qkv.shape[-1]
    groups = (qkv.view(batch, gh, height // gh, gw, width // gw, channels).permute(0, 2, 4, 1, 3, 5)
              .reshape(-1, gh * gw, channels))  # timm grid_partition, tokens of a group in raster order
    q, k, v = groups.reshape(-1, gh * gw, 3, heads, d).permute(2, 0, 3, 1, 4)  # (groups, heads, N, d) each
    table = layer.position_biases[0].relative_position_bias_table
    coords = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    bias = table[(rel[0] + gh - 1) * (2 * gw - 1) + rel[1] + gw - 1].permute(2, 0, 1)  # (heads, N, N)
    attn = (q @ k.transpose(-2, -1) * d**-0.5 + bias).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(-1, gh, gw, heads * d)
    out = (out.view(batch, height // gh, width // gw, gh, gw, heads * d).permute(0, 3, 1, 4, 2, 5)
           .reshape(batch, height, width, heads * d))  # timm grid_reverse
    return layer.proj(out)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(seed=seeds, batch=st.integers(1, 2), grid=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       multiple=st.tuples(st.integers(1, 3), st.integers(1, 3)), heads=st.integers(1, 3),
       head_dim=st.integers(1, 4), dim=st.integers(1, 8), max_scores=st.sampled_from([2**24, 5]))
def test_grid_size_groups_like_timm_maxvit_grid_partition(seed, batch, grid, multiple, heads, head_dim, dim,
                                                          max_scores, backend):
    layer = GridAttention(dim, heads, grid_size=grid, head_dim=head_dim, two_stage=False, position_bias="table",
                          backend=backend, max_scores=max_scores)
    layer = randomize_(layer, seed).double()
    x = random_map(seed, batch, grid[0] * multiple[0], grid[1] * multiple[1], dim, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _maxvit_grid_attention(layer, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["continuous", "table"])
@given(seed=seeds, data=st.data(), grid=st.integers(1, 4), two_stage=st.booleans(), max_scores=st.integers(1, 400))
def test_grid_attention_biases_in_blocks_have_the_same_gradients(seed, data, grid, two_stage, max_scores, kind):
    """The blocked path gathers the bias per block from ``table(group_size)`` (the centre of a learned table for
    smaller groups, an MLP over log-spaced offsets): outputs and gradients equal the whole-bias path."""
    def make(bound):
        layer = GridAttention(7, 2, grid_size=grid, head_dim=3, two_stage=two_stage, position_bias=kind,
                              bias_hidden_dim=5, max_scores=bound)
        return randomize_(layer, seed).double().train()

    whole, blocks = make(2**24), make(max_scores)
    x = random_map(*data.draw(feature_maps(7, max_size=11)), dtype=torch.float64)
    assert_same_training(whole, blocks, x, seed)


# ---------------------------------------------------------------------------------------------------------
# DAT's layers: rectangle windows in two orientations, channel self-attention, the adaptive interaction and the
# spatial-gate MLP


@st.composite
def rectangle_layers(draw):
    half_heads, head_dim = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    short = draw(st.integers(1, 4))
    window = draw(st.sampled_from([(short, short * draw(st.integers(1, 3))), (short * draw(st.integers(1, 3)), short)]))
    shift = draw(st.sampled_from([(0, 0), (window[0] // 2, window[1] // 2),
                                  (draw(st.integers(0, window[0] - 1)), draw(st.integers(0, window[1] - 1)))]))
    return 2 * half_heads * head_dim, 2 * half_heads, window, shift, draw(st.sampled_from([2**24, 1, 100]))


@pytest.mark.parametrize("official", [False, True], ids=["masked", "zero-padded"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(spec=rectangle_layers(), seed=seeds, data=st.data(),
       kind=st.sampled_from(["dynamic", "table", "continuous", "none"]))
def test_rectangle_window_attention_matches_reference(spec, seed, data, backend, official, kind):
    """Both orientations (h x w and w x h windows, shifts (sh, sw) and (sw, sh)) against windows clipped to the
    map; with ``zero_padding_multiple``, against the zero-padded map whose zero tokens take part (the official
    DAT). Any size, every position-bias kind, blocks of windows (max_scores) included."""
    dim, heads, window, shift, max_scores = spec
    layer = RectangleWindowAttention(dim, heads, window, shift, backend=backend, max_scores=max_scores,
                                     position_bias=kind, bias_hidden_dim=3,
                                     zero_padding_multiple=max(window) if official else None)
    layer = randomize_(layer, seed).double()
    x = random_map(*data.draw(feature_maps(dim, max_size=14)), dtype=torch.float64)
    attended, values = reference.rectangle_window_attention(layer, x, official=official)
    ours, our_values = layer.attend(x)
    torch.testing.assert_close(ours, attended, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(our_values, values, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer(x), reference.linear(attended, layer.proj), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("size", [(13, 21), (21, 13), (16, 16), (1, 1), (17, 5)])
def test_rectangle_window_attention_corner_cases(size):
    """DAT-like rectangles (4x16 and 16x4, shifted by half) pinned: maps smaller than a window, one past a
    multiple, a multiple; the zero-padded (official) mode differs from the masked one exactly where there is
    padding."""
    masked = randomize_(RectangleWindowAttention(8, 2, (4, 16), (2, 8), bias_hidden_dim=2), 0).double()
    padded = RectangleWindowAttention(8, 2, (4, 16), (2, 8), bias_hidden_dim=2, zero_padding_multiple=16).double()
    padded.load_state_dict(masked.state_dict())
    x = random_map(1, 2, *size, 8, dtype=torch.float64)
    torch.testing.assert_close(masked(x), reference.linear(reference.rectangle_window_attention(masked, x)[0],
                                                           masked.proj), rtol=1e-9, atol=1e-9)
    differ = (padded(x) - masked(x)).abs().max().item() > 1e-6
    assert differ == (size[0] % 16 != 0 or size[1] % 16 != 0)


@given(seed=seeds, data=st.data(), heads=st.integers(1, 3), head_dim=st.integers(1, 5), qkv_bias=st.booleans())
def test_channel_self_attention_matches_reference(seed, data, heads, head_dim, qkv_bias):
    dim = heads * head_dim
    layer = randomize_(ChannelSelfAttention(dim, heads, qkv_bias=qkv_bias), seed).double()
    x = random_map(*data.draw(feature_maps(dim)), dtype=torch.float64)
    attended, values = reference.channel_self_attention(layer, x)
    ours, our_values = layer.attend(x)
    torch.testing.assert_close(ours, attended, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(our_values, values, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer(x), reference.linear(attended, layer.proj), rtol=1e-9, atol=1e-9)


def _randomize_batch_norms_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for norm in module.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=gen, dtype=torch.float64))
            norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape, generator=gen, dtype=torch.float64))
    return module


@pytest.mark.parametrize("kind", ["spatial", "channel"])
@given(seed=seeds, data=st.data(), half_heads=st.integers(1, 2), head_dim=st.sampled_from([8, 16]))
def test_adaptive_interaction_matches_reference(kind, seed, data, half_heads, head_dim):
    """Around rectangle windows (gating the attention per channel) and channel attention (per pixel), in eval."""
    dim, heads = 2 * half_heads * head_dim, 2 * half_heads
    if kind == "spatial":
        layer = AdaptiveInteraction(RectangleWindowAttention(dim, heads, (2, 4), (1, 2), bias_hidden_dim=2),
                                    attention_gate="channel")
        attend = reference.rectangle_window_attention
    else:
        layer = AdaptiveInteraction(ChannelSelfAttention(dim, heads), attention_gate="spatial")
        attend = reference.channel_self_attention
    layer = _randomize_batch_norms_(randomize_(layer, seed, std=0.3).double().eval(), seed)
    x = random_map(*data.draw(feature_maps(dim, max_size=10)), dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.adaptive_interaction(layer, x, attend), rtol=1e-9, atol=1e-9)


def test_adaptive_interaction_gates_are_not_interchangeable():
    """Negative control: the same weights with the gates swapped give another output; training on one image
    is refused with a message (its BatchNorm would see one value per channel)."""
    layer = _randomize_batch_norms_(randomize_(AdaptiveInteraction(ChannelSelfAttention(32, 4),
                                                                   attention_gate="spatial"), 0, 0.3).double(), 0)
    layer.eval()
    x = random_map(1, 2, 5, 7, 32, dtype=torch.float64)
    before = layer(x)
    layer.attention_gate = "channel"
    assert (layer(x) - before).abs().max() > 1e-3
    with pytest.raises(ValueError, match="batches of 2 or more"):
        layer.train()(x[:1])


@given(seed=seeds, data=st.data(), dim=st.integers(1, 12), half_hidden=st.integers(1, 12))
def test_spatial_gate_mlp_matches_reference(seed, data, dim, half_hidden):
    layer = randomize_(SpatialGateMlp(dim, 2 * half_hidden), seed).double()
    x = random_map(*data.draw(feature_maps(dim)), dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference.spatial_gate_mlp(layer, x), rtol=1e-9, atol=1e-9)
