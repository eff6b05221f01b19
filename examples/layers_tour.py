"""A tour of gridattn's drop-in layers on a feature map whose size is not a multiple of anything.

Run: python examples/layers_tour.py
"""

import torch

import gridattn
from gridattn import ChannelAttention, FusedConv, GridAttention, Mlp, PostNorm, PreNorm, WindowAttention


def main() -> None:
    torch.manual_seed(0)
    dim, heads = 64, 4
    x = torch.randn(2, 37, 50, dim)  # (B, H, W, C): neither 37 nor 50 is a multiple of the window or interval
    print(f"input feature map (B, H, W, C) = {tuple(x.shape)}\n")

    layers = {
        "W-MSA (window 8)": PreNorm(dim, WindowAttention(dim, heads, window_size=8)),
        "SW-MSA (window 8, shift 4)": PreNorm(dim, WindowAttention(dim, heads, window_size=8, shift=4)),
        "Grid-MSA two-stage (interval 4)": PreNorm(dim, GridAttention(dim, heads, interval=4)),
        "Grid-MSA one-stage (interval 4)": PreNorm(dim, GridAttention(dim, heads, interval=4, two_stage=False)),
        "channel attention (SE)": ChannelAttention(dim, reduction=16),
        "FusedConv (HMANet's conv block)": FusedConv(dim, expand_ratio=4),
        "post-norm MLP": PostNorm(dim, Mlp(dim, 2 * dim)),
    }
    with torch.no_grad():
        for name, layer in layers.items():
            layer.eval()
            y = layer(x)
            print(f"{name:34s} -> {tuple(y.shape)}  params {sum(p.numel() for p in layer.parameters()):>7,}")

    print("\nattention backends on this machine:")
    for backend, reason in gridattn.available_backends().items():
        print(f"  {backend:9s} {reason or 'available'}")

    grid = GridAttention(dim, heads, interval=4).eval()
    with torch.no_grad():
        fused = grid(x)
        with gridattn.use_backend("math"):
            plain = grid(x)
    print(f"\nGrid-MSA, SDPA vs plain math backend: max abs difference {(fused - plain).abs().max():.2e}")


if __name__ == "__main__":
    main()
