"""CUDA: layers and backends agree with the CPU float64 reference. Skipped without a GPU (-m cuda runs them)."""

import numpy as np
import pytest
import reference
import torch
from strategies import random_map, randomize_

from gridattn import GridAttention, WindowAttention
from gridattn.data import write_image
from gridattn.functional import attention, available_backends
from gridattn.memory import estimate_inference_memory
from gridattn.models import HMANet, hmanet_config
from gridattn.train import TrainConfig, train

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("backend", ["sdpa", "xformers", "math"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [15, 30, 32])  # HMANet's head widths are 15 and 30
def test_backends_on_cuda_match_math_in_float64(backend, dtype, width):
    reason = available_backends("cuda", dtype)[backend]
    if reason:
        pytest.skip(reason)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 16, 3, 64, width, generator=gen) for _ in range(3))
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


@pytest.mark.parametrize("numerics", ["corrected", "official"])
def test_hmanet_on_cuda_matches_cpu_and_bf16_stays_close(numerics):
    torch.manual_seed(0)
    model = HMANet(hmanet_config(2, "tiny", numerics)).eval()
    with torch.no_grad():  # non-zero biases, perturbed norms and tables
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x = torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        expected = model(x)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        model = model.cuda()
        out = model(x.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(x.cuda()).float()
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-4, atol=1e-4)
    relative = (half - out).norm() / out.norm()
    assert relative < 1e-2, f"bfloat16 output off by {relative:.2e} (relative L2)"


def test_gradient_checkpointing_saves_cuda_memory_and_keeps_gradients():
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = HMANet(hmanet_config(2, "small")).cuda().train()
    x = torch.rand(4, 3, 64, 64, device="cuda")
    peaks, grads = {}, {}
    for checkpointing in (False, True):
        model.grad_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same stochastic-depth draws in both runs
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        model(x).square().mean().backward()
        torch.cuda.synchronize()
        peaks[checkpointing] = torch.cuda.max_memory_allocated() - start
        grads[checkpointing] = [p.grad.clone() for p in model.parameters()]
    assert peaks[True] < 0.6 * peaks[False], (
        f"checkpointing peak {peaks[True] / 2**20:.0f} MiB vs {peaks[False] / 2**20:.0f} MiB"
    )
    for a, b in zip(grads[False], grads[True]):
        # CUDA gradients are not bit-reproducible (atomics in scatter-adds and cuDNN backward): compare norms
        assert (a - b).norm() <= 1e-4 * a.norm() + 1e-7


def test_trainer_runs_on_cuda_with_bfloat16(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / "hr" / f"{i}.png", rng.integers(0, 256, (80, 96, 3)).astype(np.uint8))
    config = TrainConfig(output_dir=str(tmp_path / "run"), model=hmanet_config(2, "tiny"), data=(str(tmp_path / "hr"),),
                         iterations=4, batch_size=2, patch_size=16, device="cuda", progress=False, bf16=True)
    result = train(config)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert result["step"] == 4


FUSED = ("fmha", "flash", "efficient", "cudnn")  # kernel names of the fused attention implementations
FUSED_LAYERS = {  # HMANet's head widths: 15 (window branches) and 30 (grid branch)
    "grid": (lambda: GridAttention(90, 3, 4, out_proj=False), 90),
    "window": (lambda: WindowAttention(45, 3, 16, 8), 45),
}


def _explicit_softmax(kernel: str) -> bool:
    return "softmax" in kernel and not any(f in kernel for f in FUSED)


def _kernels(run) -> list[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return [e.key.lower() for e in prof.key_averages()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(FUSED_LAYERS))
@pytest.mark.parametrize("size", [(64, 64), (61, 59)])  # whole windows / groups, and padding masked
def test_sdpa_runs_fused_kernels_forward_and_backward(dtype, name, size):
    """The forward and the backward run fused attention kernels (no explicit softmax), with the shift and
    padding masks, and the learned position bias gets its gradient through them."""
    build, channels = FUSED_LAYERS[name]
    layer = build().cuda().to(dtype)
    x = torch.randn(1, *size, channels, device="cuda", dtype=dtype)
    with torch.inference_mode():
        forward = _kernels(lambda: layer.eval()(x))
    assert any(f in n for n in forward for f in FUSED), forward
    assert not any(_explicit_softmax(n) for n in forward), "the forward fell back to an explicit softmax"
    out = layer.train()(x.requires_grad_())
    backward = _kernels(lambda: out.float().square().mean().backward())
    assert any(f in n for n in backward for f in FUSED), backward
    assert not any(_explicit_softmax(n) for n in backward), "the backward fell back to an explicit softmax"
    biases = [p for n, p in layer.named_parameters() if "position" in n]
    assert biases and all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
                          for p in biases)


@pytest.mark.parametrize("preset, scale, size", [("tiny", 2, (37, 53)), ("tiny", 4, (256, 192)), ("small", 4, (96, 96)),
                                                  ("small", 3, (384, 256)), ("official", 4, (64, 64)),
                                                  ("official", 4, (128, 96)), ("official", 2, (200, 136)),
                                                  ("official", 3, (256, 256)), ("official", 4, (512, 384))])
def test_memory_estimate_bounds_the_measured_cuda_peak(preset, scale, size):
    """estimate_inference_memory lies between the allocator's peak of a no-grad forward (weights
    included) and three times it, so upscale refuses only images that would not fit."""
    torch.cuda.empty_cache()
    model = HMANet(hmanet_config(scale, preset)).cuda().eval()
    x = torch.rand(1, 3, *size, device="cuda")
    peaks = []
    with torch.no_grad():
        for _ in range(2):  # the first forward builds the eval caches, the second uses them
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            model(x)
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated())
    measured = max(peaks)
    estimate = estimate_inference_memory(model.config, *size, device="cuda")
    print(f"{preset} x{scale} {size}: measured {measured / 2**30:.3f} GiB, estimate {estimate / 2**30:.3f} GiB")
    assert measured <= estimate <= 3 * measured


def test_upscale_on_cuda_refuses_what_cannot_fit_and_runs_what_can():
    from gridattn.inference import ImageTooLargeError, available_memory, upscale

    model = HMANet(hmanet_config(4)).cuda().eval()
    image = torch.rand(1, 3, 4000, 4000)
    assert estimate_inference_memory(model.config, 4000, 4000, device="cuda") > available_memory("cuda")
    with pytest.raises(ImageTooLargeError, match="on cuda"):
        upscale(model, image)
    out = upscale(model, np.zeros((50, 70, 3), np.uint8))
    assert out.shape == (200, 280, 3)


def test_inputs_on_the_cpu_for_cuda_weights_are_refused_clearly():
    layer = GridAttention(24, 3, 4).cuda()
    with pytest.raises(ValueError, match="is on cpu but the layer's weights are on cuda"):
        layer(torch.rand(1, 8, 8, 24))
    with pytest.raises(ValueError, match="is on cpu but the layer's weights are on cuda"):
        HMANet(hmanet_config(2, "tiny")).cuda()(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("numerics", ["corrected", "official"])
@pytest.mark.parametrize("size", [(32, 32), (37, 53)])  # no padding, and padding masked
def test_an_eval_forward_never_waits_for_the_gpu(numerics, size):
    """Inside bias_cache a whole HMANet eval forward (after the first, which fills the caches) runs with no
    host-device synchronisation; CUDA's sync-debug mode turns any into an error."""
    from gridattn import bias_cache

    model = HMANet(hmanet_config(2, "small", numerics=numerics)).cuda().eval()
    x = torch.rand(1, 3, *size, device="cuda")
    with torch.no_grad(), bias_cache(model):
        model(x)  # caches filled: masks, indices, biases
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            model(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
