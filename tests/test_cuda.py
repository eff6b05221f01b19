"""CUDA: layers and backends agree with the CPU float64 reference. Skipped without a GPU (-m cuda runs them)."""

import pytest
import torch

import reference
from gridattn import GridAttention, WindowAttention
from gridattn.functional import attention, available_backends
from strategies import random_map, randomize_

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("backend", ["sdpa", "xformers", "math"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backends_on_cuda_match_math_in_float64(backend, dtype):
    reason = available_backends("cuda", dtype)[backend]
    if reason:
        pytest.skip(reason)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 16, 3, 64, 32, generator=gen) for _ in range(3))
    bias = torch.randn(16, 3, 64, 64, generator=gen)
    bias[..., 1:, 0] = float("-inf")
    expected = attention(q.double(), k.double(), v.double(), bias.double(), backend="math")
    out = attention(*(t.to("cuda", dtype) for t in (q, k, v)), bias.cuda(), backend=backend)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.double().cpu(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("build", [lambda: WindowAttention(24, 3, 8, shift=4), lambda: GridAttention(24, 3, 4)])
def test_layers_on_cuda_match_reference(build):
    layer = randomize_(build(), 0, 0.2)
    x = random_map(0, 2, 21, 30, 24)
    ref = reference.window_attention if isinstance(layer, WindowAttention) else reference.grid_attention
    expected = ref(layer, x).detach()
    torch.backends.cuda.matmul.allow_tf32 = False
    out = layer.cuda()(x.cuda())
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
