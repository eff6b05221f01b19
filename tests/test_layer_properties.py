"""Properties every drop-in layer must have: batch independence, gradients, dtypes, autocast, compile,
clear errors for bad input."""

import pytest
import reference
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import random_map, randomize_, seeds

from gridattn import (
    ChannelAttention,
    ConvChannelAttention,
    FusedConv,
    GridAttention,
    Mlp,
    PostNorm,
    PreNorm,
    WindowAttention,
)

DIM = 8

# name -> (constructor, float64 reference or None)
LAYERS = {
    "window": (lambda: WindowAttention(DIM, 2, 4), reference.window_attention),
    "shifted_window": (lambda: WindowAttention(DIM, 2, 4, shift=2), reference.window_attention),
    "grid": (lambda: GridAttention(DIM, 2, 3), reference.grid_attention),
    "grid_one_stage": (lambda: GridAttention(DIM, 2, 3, two_stage=False), reference.grid_attention),
    "channel": (lambda: ChannelAttention(DIM, 2), reference.channel_attention),
    "conv_channel": (lambda: ConvChannelAttention(DIM, 2, 2), reference.conv_channel_attention),
    "fused_conv": (lambda: FusedConv(DIM, 2, 2), reference.fused_conv),
    "prenorm_mlp": (lambda: PreNorm(DIM, Mlp(DIM, 2 * DIM)), lambda m, x: reference.pre_norm(m, x, reference.mlp)),
    "postnorm_window": (lambda: PostNorm(DIM, WindowAttention(DIM, 2, 4, shift=2)),
                        lambda m, x: reference.post_norm(m, x, reference.window_attention)),
}
names = pytest.mark.parametrize("name", sorted(LAYERS))


def make(name: str, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    return randomize_(LAYERS[name][0](), seed, std)


@names
@given(seed=seeds, batch=st.integers(2, 3), height=st.integers(1, 11), width=st.integers(1, 11))
def test_samples_of_a_batch_are_independent(name, seed, batch, height, width):
    layer = make(name, seed).eval()
    x = random_map(seed, batch, height, width, DIM)
    with torch.no_grad():
        together = layer(x)
        one_by_one = torch.cat([layer(x[i:i + 1]) for i in range(batch)])
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-5)


@names
@given(seed=seeds, height=st.integers(2, 9), width=st.integers(2, 9))
def test_every_parameter_gets_the_reference_gradient(name, seed, height, width):
    """Backward through the layer equals backward through the float64 reference, parameter by parameter."""
    constructor, ref = LAYERS[name]
    layer = randomize_(constructor(), seed, 0.3).double()
    x = random_map(seed, 2, height, width, DIM, dtype=torch.float64)
    weight = torch.randn(2, height, width, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    params = [p for p in layer.parameters()]
    grads = torch.autograd.grad((layer(x) * weight).sum(), params, allow_unused=True)
    for (param_name, _), grad in zip(layer.named_parameters(), grads):
        assert grad is not None and torch.isfinite(grad).all(), param_name
    if ref is None:
        assert all(g.abs().sum() > 0 for g in grads)
        return
    expected = torch.autograd.grad((ref(layer, x) * weight).sum(), params, allow_unused=True)
    for (param_name, _), grad, exp in zip(layer.named_parameters(), grads, expected):
        exp = torch.zeros_like(grad) if exp is None else exp
        torch.testing.assert_close(grad, exp, rtol=1e-8, atol=1e-8, msg=param_name)


@names
def test_input_gradient_is_finite_when_padding_dominates(name):
    """1x1 and 2x1 maps: almost everything is padding (whole grid groups of it), still no NaN."""
    layer = make(name)
    for height, width in ((1, 1), (2, 1), (1, 5)):
        x = random_map(0, 1, height, width, DIM).requires_grad_()
        layer(x).sum().backward()
        assert torch.isfinite(x.grad).all()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in layer.parameters())


@names
@given(seed=seeds, height=st.integers(1, 10), width=st.integers(1, 10))
def test_bfloat16_close_to_float64_reference(name, seed, height, width):
    layer = make(name, seed, std=0.2)
    x = random_map(seed, 1, height, width, DIM)
    expected = layer.double()(x.double()) if LAYERS[name][1] is None else LAYERS[name][1](layer, x)
    out = layer.bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    scale = expected.abs().max().item() + 1
    torch.testing.assert_close(out.double(), expected.detach(), rtol=0.05, atol=0.05 * scale)


@names
def test_autocast_bfloat16_forward_and_backward(name):
    layer = make(name)
    x = random_map(1, 2, 7, 9, DIM).requires_grad_()
    expected = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05 * (expected.abs().max().item() + 1))
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()


@names
def test_torch_compile_matches_eager(name):
    """Dynamo traces the layer (graph capture + AOT autograd) and gives the eager result, for two sizes."""
    torch._dynamo.reset()
    layer = make(name)
    compiled = torch.compile(layer, backend="aot_eager", dynamic=False)
    for height, width in ((6, 7), (9, 4)):
        x = random_map(2, 1, height, width, DIM).requires_grad_()
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)
        compiled(x).sum().backward()
        assert torch.isfinite(x.grad).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shifted_window", "grid", "fused_conv"])
def test_torch_compile_inductor_matches_eager(name):
    torch._dynamo.reset()
    layer = make(name).eval()
    compiled = torch.compile(layer)
    x = random_map(3, 2, 10, 13, DIM)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4, atol=1e-4)


@given(seed=seeds, height=st.integers(1, 13), width=st.integers(1, 13))
def test_padding_does_not_reach_full_windows(seed, height, width):
    """W-MSA: the full windows of an odd-sized map give what they give on the cropped map, which needs no
    padding (so padding and its mask change nothing but the partial windows)."""
    layer = make("window", seed).eval()
    x = random_map(seed, 1, height, width, DIM)
    full_h, full_w = height // 4 * 4, width // 4 * 4
    if full_h and full_w:
        with torch.no_grad():
            torch.testing.assert_close(layer(x)[:, :full_h, :full_w], layer(x[:, :full_h, :full_w]),
                                       rtol=1e-6, atol=1e-6)


@names
def test_bad_inputs_raise_clear_errors(name):
    layer = make(name)
    if not isinstance(getattr(layer, "fn", None), Mlp):  # an MLP takes (..., C) of any rank
        with pytest.raises(ValueError, match="4-D"):
            layer(torch.zeros(3, 4, DIM))
    with pytest.raises(ValueError, match="channels"):
        layer(torch.zeros(1, 4, 4, DIM + 1))
    if not isinstance(layer, (PreNorm, PostNorm)):
        with pytest.raises(ValueError, match="floating"):
            layer(torch.zeros(1, 4, 4, DIM, dtype=torch.long))
        with pytest.raises(ValueError, match="empty"):
            layer(torch.zeros(1, 0, 4, DIM))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: WindowAttention(10, 3, 4), "dim=10 is not divisible by num_heads=3"),
        (lambda: WindowAttention(8, 2, 0), "window_size must be >= 1"),
        (lambda: WindowAttention(8, 2, 4, shift=4), "shift"),
        (lambda: WindowAttention(8, 2, 4, shift=-1), "shift"),
        (lambda: WindowAttention(8, 0, 4), "num_heads must be a positive int"),
        (lambda: GridAttention(10, 4, 2), "not divisible by num_heads"),
        (lambda: GridAttention(8, 2, 0), "interval must be >= 1"),
        (lambda: GridAttention(8, 2, (2, 0)), "interval must be >= 1"),
        (lambda: ChannelAttention(8, 0), "reduction"),
        (lambda: FusedConv(0), "dim"),
        (lambda: Mlp(8, 0), "hidden_dim"),
        (lambda: PreNorm(8, Mlp(8, 8), drop_path=1.0), "drop-path"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_argument_types_are_validated_up_front():
    import numpy as np

    assert WindowAttention(8, 2, np.int64(4)).window_size == (4, 4)
    with pytest.raises(ValueError, match="window_size must be an int or a pair"):
        WindowAttention(8, 2, 4.0)
    with pytest.raises(ValueError, match="shift must be an int or a pair"):
        WindowAttention(8, 2, 4, shift=1.5)
    with pytest.raises(ValueError, match="shift must be an int or a pair"):
        WindowAttention(8, 2, 4, shift=True)
    with pytest.raises(ValueError, match="unknown attention backend 'fast'"):
        GridAttention(8, 2, 4, backend="fast")
    with pytest.raises(ValueError, match="attn_drop"):
        WindowAttention(8, 2, 4, attn_drop=1.5)
    with pytest.raises(ValueError, match="dtype torch.float64 but the layer's weights are torch.float32"):
        GridAttention(8, 2, 4)(torch.zeros(1, 4, 4, 8, dtype=torch.float64))
