"""attention(): every backend against a per-row float64 loop, with and without bias and masks; selection."""

import importlib.util

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

import gridattn
from gridattn.functional import (
    BACKENDS,
    BackendUnavailableError,
    attention,
    available_backends,
    get_default_backend,
    set_default_backend,
    use_backend,
)

CPU_BACKENDS = [name for name, reason in available_backends("cpu").items() if reason is None]


def loop_reference(q, k, v, bias, scale):
    """Row by row in float64: weights_m = exp(s_m - max) / sum, s_m = q·k_m * scale + bias_m."""
    q, k, v = q.double(), k.double(), v.double()
    lead = q.shape[:-2]
    full_bias = torch.zeros(*lead, q.shape[-2], k.shape[-2], dtype=torch.float64)
    if bias is not None:
        full_bias = full_bias + bias.double()
    out = torch.empty(*lead, q.shape[-2], v.shape[-1], dtype=torch.float64)
    for index in torch.cartesian_prod(*[torch.arange(n) for n in (*lead, q.shape[-2])]).reshape(-1, len(lead) + 1):
        *batch, row = index.tolist()
        scores = (k[tuple(batch)] @ q[(*batch, row)]) * scale + full_bias[(*batch, row)]
        weights = torch.exp(scores - scores.max())
        out[(*batch, row)] = (weights / weights.sum()) @ v[tuple(batch)]
    return out


@st.composite
def attention_inputs(draw):
    """q, k, v with 1-3 leading dims, and a bias broadcast over a random subset of them (or none)."""
    gen = torch.Generator().manual_seed(draw(seeds))
    lead = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    n_q, n_k, d, d_v = (draw(st.integers(1, 9)) for _ in range(4))
    q = torch.randn(*lead, n_q, d, generator=gen)
    k = torch.randn(*lead, n_k, d, generator=gen)
    v = torch.randn(*lead, n_k, d_v, generator=gen)
    kind = draw(st.sampled_from(["none", "bias", "bias+mask"]))
    bias = None
    if kind != "none":
        shape = [n if draw(st.booleans()) else 1 for n in lead]
        shape = shape[draw(st.integers(0, len(shape))):]  # maybe fewer dims than q
        bias = torch.randn(*shape, n_q, n_k, generator=gen) * 2
        if kind == "bias+mask":
            masked = torch.rand(*shape, n_q, n_k, generator=gen) < 0.5
            masked[..., 0] = False  # every row keeps at least one key
            bias = bias.masked_fill(masked, float("-inf"))
    scale = draw(st.sampled_from([None, 0.3]))
    return q, k, v, bias, scale


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(inputs=attention_inputs())
def test_backend_matches_loop_reference(inputs, backend):
    q, k, v, bias, scale = inputs
    expected = loop_reference(q, k, v, bias, q.shape[-1] ** -0.5 if scale is None else scale)
    torch.testing.assert_close(attention(q, k, v, bias, scale=scale, backend=backend).double(), expected,
                               rtol=1e-5, atol=1e-5)
    q64, k64, v64 = q.double(), k.double(), v.double()
    bias64 = None if bias is None else bias.double()
    torch.testing.assert_close(attention(q64, k64, v64, bias64, scale=scale, backend=backend), expected,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(inputs=attention_inputs())
def test_backend_gradients_match_math(inputs, backend):
    """Gradients into q, k, v and the (learned) bias agree with the plain math path, in float64."""
    q, k, v, bias, scale = (t.double().requires_grad_() if isinstance(t, torch.Tensor) else t for t in inputs)
    weight = torch.randn(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    tensors = [t for t in (q, k, v, bias) if t is not None]
    grads = {}
    for name in (backend, "math"):
        out = attention(q, k, v, bias, scale=scale, backend=name)
        grads[name] = torch.autograd.grad((out * weight).sum(), tensors)
    for ours, plain in zip(grads[backend], grads["math"]):
        torch.testing.assert_close(ours, plain, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(inputs=attention_inputs())
def test_bfloat16_close_to_float64_with_float32_softmax(inputs, backend):
    q, k, v, bias, scale = inputs
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias, scale=scale, backend=backend)
    assert out.dtype == torch.bfloat16
    expected = loop_reference(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias,
                              q.shape[-1] ** -0.5 if scale is None else scale)
    torch.testing.assert_close(out.double(), expected, rtol=0.05, atol=0.05)


def test_default_backend_selection_global_and_scoped():
    assert get_default_backend() == "sdpa"
    with use_backend("math"):
        assert get_default_backend() == "math"
    assert get_default_backend() == "sdpa"
    set_default_backend("math")
    try:
        assert gridattn.functional.get_default_backend() == "math"
    finally:
        set_default_backend("sdpa")


def test_global_default_reaches_layers(monkeypatch):
    """A layer without its own backend uses the global default (seen by which kernel gets called)."""
    from gridattn.functional import backends as attention_module

    calls = []
    original = attention_module._KERNELS["math"]
    monkeypatch.setitem(attention_module._KERNELS, "math", lambda *a: calls.append(1) or original(*a))
    layer = gridattn.WindowAttention(8, 2, 4)
    x = torch.randn(1, 4, 4, 8)
    layer(x)
    assert not calls
    with use_backend("math"):
        layer(x)
    assert calls


def test_unknown_backend_and_bad_shapes_raise_value_error():
    q = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        attention(q, q, q, backend="flash")
    with pytest.raises(ValueError, match="unknown attention backend"):
        set_default_backend("fast")
    with pytest.raises(ValueError, match="same head width"):
        attention(q, torch.randn(2, 3, 5), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        attention(q, q, q, torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="leading"):
        attention(q, torch.randn(1, 3, 4), torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="floating"):
        attention(q.long(), q.long(), q.long())


@given(choices=st.lists(st.sampled_from(["1", "same", "other"]), min_size=0, max_size=5))
def test_bias_shapes_are_accepted_exactly_when_they_broadcast_to_the_scores(choices):
    """The hand-written check against torch.broadcast_shapes (the reference)."""
    q, k = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 6, 5)
    scores = (2, 3, 4, 6)
    dims = list(scores[len(scores) - len(choices):]) if len(choices) <= 4 else [2, *scores]
    shape = tuple(1 if c == "1" else d if c == "same" else d + 1 for c, d in zip(choices, dims))
    try:
        broadcasts = torch.broadcast_shapes(shape, scores) == scores
    except RuntimeError:
        broadcasts = False
    bias = torch.zeros(shape)
    if broadcasts:
        assert attention(q, k, k, bias, backend="math").shape == (2, 3, 4, 5)
    else:
        with pytest.raises(ValueError, match="does not broadcast to the scores"):
            attention(q, k, k, bias, backend="math")


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None and torch.cuda.is_available(),
                    reason="xformers can run here")
def test_unavailable_backend_says_why():
    reason = available_backends("cpu")["xformers"]
    assert reason is not None and ("not installed" in reason or "CUDA" in reason)
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(BackendUnavailableError, match="'xformers' cannot run: " + reason.split(" (")[0]):
        attention(q, q, q, backend="xformers")
    assert set(BACKENDS) == {"sdpa", "xformers", "math"}


@given(groups=st.integers(1, 5), queries=st.integers(1, 9), keys=st.integers(1, 9), block=st.integers(1, 10),
       axis=st.sampled_from(["groups", "queries"]), seed=st.integers(0, 2**16))
def test_blocked_attention_equals_one_call_with_the_whole_bias(groups, queries, keys, block, axis, seed):
    from gridattn.functional import blocked_attention

    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, groups, 3, queries, 4, generator=gen, dtype=torch.float64)
    k = torch.randn(2, groups, 3, keys, 4, generator=gen, dtype=torch.float64)
    v = torch.randn(2, groups, 3, keys, 5, generator=gen, dtype=torch.float64)
    bias = torch.randn(groups, 3, queries, keys, generator=gen, dtype=torch.float64)
    calls = []

    def block_bias(start, stop):
        calls.append((start, stop))
        return bias[start:stop] if axis == "groups" else bias[:, :, start:stop]

    out = blocked_attention(q, k, v, block_bias, axis=axis, block=block, backend="math")
    torch.testing.assert_close(out, attention(q, k, v, bias, backend="math"), rtol=0, atol=1e-12)
    length = groups if axis == "groups" else queries
    assert calls == [(s, min(length, s + block)) for s in range(0, length, block)]


@pytest.mark.parametrize("loaded", [False, True])
def test_an_xformers_built_for_another_torch_is_refused_with_the_reason(monkeypatch, loaded):
    """The xformers wheel for one PyTorch imports under another but without its compiled kernels (it only warns);
    the backend must then be refused with that reason instead of failing inside xformers."""
    import importlib.machinery
    import sys
    import types

    from gridattn.functional import backends

    fake = types.ModuleType("xformers")
    fake.__spec__ = importlib.machinery.ModuleSpec("xformers", None)
    fake.__version__, fake._has_cpp_library = "0.0.35", loaded
    monkeypatch.setitem(sys.modules, "xformers", fake)
    backends._xformers_extension_problem.cache_clear()
    try:
        reason = backends.unavailable_reason("xformers", "cuda", torch.bfloat16)
    finally:
        backends._xformers_extension_problem.cache_clear()
    if loaded:
        assert reason is None
    else:
        assert "xformers 0.0.35 could not load its C++/CUDA kernels" in reason and torch.__version__ in reason


@given(inputs=attention_inputs())
def test_bfloat16_training_with_a_learned_bias_close_to_float64(inputs):
    """The CPU path for a bias that needs a gradient (sdpa's fused kernel gives it none): bfloat16 products,
    float32 softmax. Output and the gradients of q, k, v and the bias stay within bfloat16's error of float64."""
    q, k, v, bias, scale = inputs
    if bias is None:
        bias = torch.zeros(q.shape[-2], k.shape[-2])
    weight = torch.randn(*q.shape[:-1], v.shape[-1], generator=torch.Generator().manual_seed(0))
    results = {}
    for dtype in (torch.bfloat16, torch.float64):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)] + [bias.double().requires_grad_()]
        out = attention(*leaves[:3], leaves[3], scale=scale, backend="sdpa")
        grads = torch.autograd.grad((out.double() * weight.double()).sum(), leaves)
        results[dtype] = [out.double(), *(g.double() for g in grads)]
    for ours, exact in zip(results[torch.bfloat16], results[torch.float64]):
        finite = torch.isfinite(exact)
        torch.testing.assert_close(ours[finite], exact[finite], rtol=0.05, atol=0.05)
