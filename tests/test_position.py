"""Position biases: values against explicit construction, the official HMANet width, and the eval cache."""

import pytest
import reference
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import randomize_, seeds

from gridattn import DynamicPositionBias, RelativePositionBias


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
    from gridattn import GridAttention

    layer = GridAttention(dim, 3 if dim % 3 == 0 else 2, 4)
    assert layer.position_biases[0].pos_proj.out_features == max(4, dim // 4 // 4)


def test_bias_is_computed_once_per_size_in_eval_without_grad(monkeypatch):
    module = DynamicPositionBias(2, 4).eval()
    calls = []
    original = module._gather
    monkeypatch.setattr(module, "_gather", lambda size: calls.append(size) or original(size))
    with torch.no_grad():
        first = module((3, 4))
        assert module((3, 4)) is first
        module((5, 2))
    assert calls == [(3, 4), (5, 2)]
    module((3, 4))  # with grad: computed afresh, so gradients can flow
    assert len(calls) == 3


def test_cache_follows_weight_changes():
    module = DynamicPositionBias(2, 4).eval()
    with torch.no_grad():
        before = module((3, 3)).clone()
        module.load_state_dict({k: v + 1 for k, v in module.state_dict().items()})
        after = module((3, 3))
        assert not torch.equal(before, after)
        torch.testing.assert_close(after, _official_dynamic_bias(module, 3, 3))
        assert module.double()((3, 3)).dtype == torch.float64

    table = RelativePositionBias(2, 2)
    optimizer = torch.optim.SGD(table.parameters(), lr=1.0)
    table.eval()
    with torch.no_grad():
        stale = table(2).clone()
    table.train()
    table(2).sum().backward()
    optimizer.step()
    table.eval()
    with torch.no_grad():
        assert not torch.equal(stale, table(2))
        assert torch.equal(table(2), table.relative_position_bias_table[reference_index(2)].permute(2, 0, 1))


def reference_index(size):
    coords = [(y, x) for y in range(size) for x in range(size)]
    return torch.tensor([[(a[0] - b[0] + size - 1) * (2 * size - 1) + a[1] - b[1] + size - 1 for b in coords]
                         for a in coords])


def _fresh(module, size):
    module.train()
    with torch.no_grad():
        value = module(size)
    module.eval()
    return value


def test_cache_sees_in_place_data_updates_and_fused_optimiser_steps():
    """EMA code edits p.data in place and fused optimisers do not bump tensor versions: both must be seen."""
    module = randomize_(DynamicPositionBias(2, 4), 0).eval()
    with torch.no_grad():
        module((3, 3))
        for p in module.parameters():
            p.data.mul_(-3)
        torch.testing.assert_close(module((3, 3)), _fresh(module, (3, 3)))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.5, fused=True)
    with torch.no_grad():
        module((3, 3))
    module((3, 3)).sum().backward()  # grad enabled: computed afresh
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(module((3, 3)), _fresh(module, (3, 3)))


def test_cache_is_keyed_by_autocast_and_bounded_and_not_pickled():
    import pickle

    module = DynamicPositionBias(2, 4).eval()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert module((3, 3)).dtype == torch.bfloat16
        assert module((3, 3)).dtype == torch.float32
        for size in range(1, 20):
            module((size, 2))
    assert len(module._cache) <= 8
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
