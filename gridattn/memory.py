"""How much memory an HMANet forward needs, computed from its configuration.

:func:`gridattn.inference.upscale` and the command line use it to refuse, before running, an image (or tile)
whose forward cannot fit, with a tile size that does.
"""

from __future__ import annotations

import torch

from .functional.blocked import MAX_SCORES
from .models.hmanet import HMANet, HMANetConfig

CUDA_WORKSPACES = 96 * 2**20
"""cuBLAS / cuDNN workspaces, which come from the same allocator as the tensors on CUDA."""


def weight_bytes(config: HMANetConfig, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of an HMANet's parameters in ``dtype`` (counted on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        count = sum(p.numel() for p in HMANet(config).parameters())
    return count * dtype.itemsize


def estimate_inference_memory(
    config: HMANetConfig,
    height: int,
    width: int,
    *,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    weights: int | None = None,
) -> int:
    """Bytes the first forward of an HMANet under ``torch.no_grad()`` needs at most for ``(batch, C, height, width)``.

    An upper estimate, calibrated on CUDA's allocator with the default attention backend (a CUDA test checks
    that it lies between the measured peak and three times it). It counts the weights; the activations
    (FusedConv's expanded maps, ``6 * embed_dim`` channels with a few alive at once, are the largest in the
    body, the pixel-shuffle maps in the upsampler); the eval caches kept for this size (relative-position
    biases, shift masks, grid biases of groups small enough to be built whole); the blocks of at most
    :data:`~gridattn.functional.MAX_SCORES` score entries that large attentions are computed in; and on CUDA
    :data:`CUDA_WORKSPACES`.

    Args:
        config: the model's configuration.
        height: input height in pixels (before padding).
        width: input width in pixels.
        batch: images per forward.
        dtype: activation dtype (that of the weights, or autocast's).
        device: where the forward runs.
        weights: bytes of the model's parameters; default :func:`weight_bytes` in ``dtype``.

    Example:
        >>> from gridattn.models import hmanet_config
        >>> small = estimate_inference_memory(hmanet_config(4, "tiny"), 64, 64)
        >>> small < estimate_inference_memory(hmanet_config(4, "tiny"), 65, 64)   # padded to 72 x 64
        True
    """
    c = config
    itemsize = dtype.itemsize
    multiple = c.pad_multiple
    per_image = -(-height // multiple) * multiple * -(-width // multiple) * multiple  # padded tokens
    tokens = batch * per_image
    body = 28 * c.embed_dim  # channels alive at the FusedConv peak, residual streams and q/k/v copies
    upsampler = c.upsample_features * (2 * c.scale ** 2 + 2) + 4 * c.in_channels * c.scale ** 2
    activations = tokens * itemsize * max(body, upsampler)
    window = c.window_size ** 2
    group = per_image // c.interval ** 2  # tokens of one grid group
    caches = 2 * per_image * window * 4  # shift masks (windows, N, N) of the FABs and of the GAB
    scores = 0
    for depth, heads in zip(c.depths, c.num_heads):
        branch = heads // 2  # GAB's branches split the heads
        caches += (depth * heads + 2 * branch) * window ** 2 * 4  # relative-position biases (heads, N, N)
        if branch * group ** 2 <= MAX_SCORES:  # grid biases (heads, N, N) of both stages, else built per block
            caches += 2 * branch * group ** 2 * 4
        scores = max(scores, tokens * heads * window, tokens * branch * group)
    blocks = 3 * 4 * min(scores, MAX_SCORES)  # bias + mask sums and float32 scores of one block
    if weights is None:
        weights = weight_bytes(config, dtype)
    workspaces = CUDA_WORKSPACES if torch.device(device).type == "cuda" else 0
    return weights + activations + caches + blocks + workspaces
