"""Independent references for the layers, written in the most obvious way.

Each reference reads the layer's weights but none of its code paths: tokens are grouped with explicit
index arithmetic (no partition, roll or mask helpers), position biases are looked up from the true
offsets of each token pair, softmax and matrix products run per group in float64.
"""

from __future__ import annotations

import math

import torch


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)  # keeps the autograd graph, so gradients can be compared too


def linear(x: torch.Tensor, layer) -> torch.Tensor:
    out = x @ _f64(layer.weight).T
    return out if layer.bias is None else out + _f64(layer.bias)


def layer_norm(x: torch.Tensor, norm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * _f64(norm.weight) + _f64(norm.bias)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def mlp(layer, x: torch.Tensor) -> torch.Tensor:
    """``fc2(GELU(fc1(x)))``."""
    return linear(gelu(linear(x, layer.fc1)), layer.fc2)


def pre_norm(layer, x: torch.Tensor, fn) -> torch.Tensor:
    """``x + fn(layer.fn, LN(x))`` (no drop-path: eval or p = 0)."""
    return _f64(x) + fn(layer.fn, layer_norm(x, layer.norm))


def post_norm(layer, x: torch.Tensor, fn) -> torch.Tensor:
    """``x + LN(fn(layer.fn, x))``."""
    return _f64(x) + layer_norm(fn(layer.fn, x), layer.norm)


def softmax_attention(q, k, v, bias, scale=None):
    """One head: q (n, d), k (m, d), v (m, e), bias (n, m); ``scale`` defaults to ``1 / sqrt(d)``."""
    scores = q @ k.T * (1 / math.sqrt(q.shape[-1]) if scale is None else scale) + bias
    scores = scores - scores.max(dim=-1, keepdim=True).values
    weights = torch.exp(scores)
    return (weights / weights.sum(dim=-1, keepdim=True)) @ v


def _groups(height, width, key):
    """Dict: group key -> list of (y, x) in raster order."""
    groups: dict = {}
    for y in range(height):
        for x in range(width):
            groups.setdefault(key(y, x), []).append((y, x))
    return groups


def position_bias(pb, offsets: torch.Tensor, group_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Any kind of position bias at integer offsets ``(..., 2)`` (query minus key) -> ``(..., heads)``, float64;
    zeros for ``None`` (no bias). Each kind by its definition, not by the module's table code.

    ``group_size`` (the window's or group's nominal size) is read only by a Swin V2 bias without a
    ``pretrained_window_size``, whose offsets are then normalised by the group's own size."""
    from gridattn.layers.position import ContinuousPositionBias, DynamicPositionBias, RelativePositionBias

    if pb is None:
        return torch.zeros(*offsets.shape[:-1], 1, dtype=torch.float64)
    if isinstance(pb, RelativePositionBias):
        (h, w), table = pb.window_size, _f64(pb.relative_position_bias_table)
        return table[(offsets[..., 0] + h - 1) * (2 * w - 1) + offsets[..., 1] + w - 1]
    if isinstance(pb, DynamicPositionBias):
        return dynamic_bias(pb, offsets)
    assert isinstance(pb, ContinuousPositionBias), type(pb)
    coords = offsets.to(torch.float32)  # log-spaced coordinates are defined in float32 (as timm computes them)
    if pb.style == "maxvit":
        coords = torch.sign(coords) * torch.log(1 + coords.abs())
    else:
        size = pb.pretrained_window_size if pb.pretrained_window_size is not None else group_size
        assert size is not None, "a Swin V2 bias without pretrained_window_size needs the group size"
        # (n - 1) scales offsets up to the window into [-8, 8]; an axis of one position divides by 1, not 0
        coords = coords / torch.tensor([max(n - 1, 1) for n in size], dtype=torch.float32) * 8
        coords = torch.sign(coords) * torch.log2(1 + coords.abs()) / 3
    out = linear(torch.relu(linear(coords.to(torch.float64), pb.fc1)), pb.fc2)
    return 16 * torch.sigmoid(out) if pb.style == "swinv2" else out


def _head(bias: torch.Tensor, h: int) -> torch.Tensor:
    """Head ``h`` of a ``(n, m, heads)`` bias; the zeros of "no bias" have one column for every head."""
    return bias[..., h if bias.shape[-1] > 1 else 0]


def _heads(feats: torch.Tensor, heads: int, d: int):
    """Per head: (q, k, v) columns of a qkv row ``[q heads | k heads | v heads]``."""
    width = heads * d
    for h in range(heads):
        yield h, tuple(feats[:, part * width + h * d:part * width + (h + 1) * d] for part in range(3))


def window_attention(layer, x: torch.Tensor) -> torch.Tensor:
    """W-MSA / SW-MSA over windows clipped to the map; shifted windows start at ``shift - window``."""
    x = _f64(x)
    heads, d = layer.num_heads, layer.head_dim
    qkv = linear(x, layer.qkv)
    if layer.q_bias is not None:  # Swin V2: query and value biases, none for the key
        qkv = qkv + torch.cat([_f64(layer.q_bias), torch.zeros(heads * d, dtype=torch.float64), _f64(layer.v_bias)])
    cosine = None
    if layer.logit_scale is not None:
        def cosine(h, q, k):  # Swin V2: cosine similarity times exp(min(logit_scale, ln 100))
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            return q, k, torch.exp(torch.clamp(_f64(layer.logit_scale[h, 0, 0]), max=math.log(100)))
    out = _window_groups_attention(qkv, heads, layer.window_size, layer.shift, layer.relative_position_bias, cosine)
    return linear(out, layer.proj)


def dynamic_bias(pb, offsets: torch.Tensor) -> torch.Tensor:
    """The MLP of a DynamicPositionBias on raw offsets ``(..., 2)`` -> ``(..., heads)``, in float64."""
    h = linear(offsets.to(torch.float64), pb.pos_proj)
    for stage in (pb.pos1, pb.pos2, pb.pos3):
        norm, _, lin = stage
        h = linear(torch.relu(layer_norm(h, norm)), lin)
    return h


def grid_attention(layer, x: torch.Tensor) -> torch.Tensor:
    """Grid-MSA: group (y mod K, x mod K), position (y // K, x // K); two-stage or one-stage. ``K`` is the
    layer's interval, or ``ceil(size / grid_size)``."""
    x = _f64(x)
    batch, height, width, _ = x.shape
    if layer.interval is not None:
        ih, iw = layer.interval
    else:
        ih, iw = math.ceil(height / layer.grid_size[0]), math.ceil(width / layer.grid_size[1])
    heads, d = layer.num_heads, layer.head_dim
    qkv = linear(x, layer.qkv)
    grid = linear(x, layer.grid_proj) if layer.two_stage else None
    out = torch.zeros(batch, height, width, heads * d, dtype=torch.float64)
    groups = _groups(height, width, lambda y, x_: (y % ih, x_ % iw))
    group_size = (math.ceil(height / ih), math.ceil(width / iw))  # the largest group (rows, columns)
    pbs = list(layer.position_biases) or [None, None]
    for b in range(batch):
        for tokens in groups.values():
            ys = torch.tensor([t[0] for t in tokens])
            xs = torch.tensor([t[1] for t in tokens])
            offsets = torch.stack([(ys[:, None] - ys[None, :]) // ih, (xs[:, None] - xs[None, :]) // iw], -1)
            biases = [position_bias(pb, offsets, group_size) for pb in pbs]  # (n, n, heads or 1) each
            for h, (q, k, v) in _heads(qkv[b, ys, xs], heads, d):
                b0, b1 = _head(biases[0], h), _head(biases[-1], h)
                if layer.two_stage:
                    g = grid[b, ys, xs, h * d:(h + 1) * d]
                    summary = softmax_attention(g, k, v, b0)
                    res = softmax_attention(q, g, summary, b1)
                else:
                    res = softmax_attention(q, k, v, b0)
                out[b, ys, xs, h * d:(h + 1) * d] = res
    return out if isinstance(layer.proj, torch.nn.Identity) else linear(out, layer.proj)


def channel_attention(layer, x: torch.Tensor) -> torch.Tensor:
    x = _f64(x)
    gates = []
    for b in range(x.shape[0]):
        pooled = x[b].reshape(-1, x.shape[-1]).sum(0) / (x.shape[1] * x.shape[2])
        hidden = linear(pooled, layer.fc1)
        hidden = hidden * torch.sigmoid(hidden) if isinstance(layer.act, torch.nn.SiLU) else torch.relu(hidden)
        gates.append(torch.sigmoid(linear(hidden, layer.fc2)))
    return x * torch.stack(gates)[:, None, None, :]


def conv2d_same(x: torch.Tensor, conv) -> torch.Tensor:
    """3x3 (or any odd) 'same' convolution on (B, H, W, C) by explicit shifted sums."""
    weight = _f64(conv.weight)  # (out, in, kh, kw)
    kh, kw = weight.shape[-2:]
    padded = torch.nn.functional.pad(x, (0, 0, kw // 2, kw // 2, kh // 2, kh // 2))
    height, width = x.shape[1:3]
    out = torch.zeros(*x.shape[:3], weight.shape[0], dtype=torch.float64)
    for dy in range(kh):
        for dx in range(kw):
            out += padded[:, dy:dy + height, dx:dx + width] @ weight[:, :, dy, dx].T
    return out + _f64(conv.bias)


def fused_conv(layer, x: torch.Tensor) -> torch.Tensor:
    x = _f64(x)
    y = conv2d_same(layer_norm(x, layer.norm), layer.expand)
    y = gelu(layer_norm(y, layer.expand_norm))
    return x + linear(channel_attention(layer.se, y), layer.project)


def conv_channel_attention(layer, x: torch.Tensor) -> torch.Tensor:
    y = conv2d_same(gelu(conv2d_same(_f64(x), layer.conv1)), layer.conv2)
    return channel_attention(layer.channel_attention, y)


def swin_windows(t: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, window * window, C) by reshape, as Swin writes it."""
    batch, height, width, channels = t.shape
    t = t.reshape(batch, height // window, window, width // window, window, channels)
    return t.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def swin_region_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Swin's SW-MSA mask: three slices per axis of the rolled map, -100 between regions: (nW, N, N)."""
    region = torch.zeros(height, width)
    label = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            region[hs, ws] = label
            label += 1
    region = swin_windows(region[None, :, :, None], window)[..., 0]
    return (region[:, None, :] != region[:, :, None]).double() * -100.0


def _window_groups_attention(qkv: torch.Tensor, heads: int, window, shift, bias_module, qk=None) -> torch.Tensor:
    """Attention of a projected map ``(B, H, W, 3 * heads * d)`` inside windows clipped to the map; shifted
    windows start at ``shift - window``. Every position of the map is a token (pad it first to add tokens).
    ``qk(head, q, k) -> (q, k, scale)`` replaces q·k / √d (Swin V2's cosine)."""
    batch, height, width, channels = qkv.shape
    d = channels // 3 // heads
    (wh, ww), (sh, sw) = window, shift
    out = torch.zeros(batch, height, width, heads * d, dtype=torch.float64)
    groups = _groups(height, width, lambda y, x_: ((y - sh) // wh, (x_ - sw) // ww))
    for b in range(batch):
        for tokens in groups.values():
            ys = torch.tensor([t[0] for t in tokens])
            xs = torch.tensor([t[1] for t in tokens])
            offsets = torch.stack([ys[:, None] - ys[None, :], xs[:, None] - xs[None, :]], -1)
            bias = position_bias(bias_module, offsets, window)
            for h, (q, k, v) in _heads(qkv[b, ys, xs], heads, d):
                q, k, scale = (q, k, None) if qk is None else qk(h, q, k)
                out[b, ys, xs, h * d:(h + 1) * d] = softmax_attention(q, k, v, _head(bias, h), scale)
    return out


def rectangle_window_attention(layer, x: torch.Tensor, official: bool = False):
    """RectangleWindowAttention's ``attend``: ``(attended, values)``. Channels ``[q | k | v]`` of the projection,
    each split in halves; half ``i`` attends in windows ``layer.window_sizes[i]`` shifted by ``layer.shifts[i]``.
    ``official``: the projected map is zero-padded to a multiple of the longer window side first, and its zero
    tokens attend and are attended like the others (the official DAT); otherwise windows are clipped to the map."""
    x = _f64(x)
    batch, height, width, dim = x.shape
    qkv = linear(x, layer.qkv)
    if official:
        multiple = max(layer.window_sizes[0])
        qkv = torch.nn.functional.pad(qkv, (0, 0, 0, (-width) % multiple, 0, (-height) % multiple))
    half = dim // 2
    halves = []
    for i, (window, shift) in enumerate(zip(layer.window_sizes, layer.shifts)):
        columns = torch.cat([torch.arange(part * dim + i * half, part * dim + (i + 1) * half) for part in range(3)])
        bias = layer.position_biases[i] if len(layer.position_biases) else None
        halves.append(_window_groups_attention(qkv[..., columns], layer.num_heads // 2, window, shift, bias))
    attended = torch.cat(halves, -1)[:, :height, :width]
    return attended, qkv[:, :height, :width, 2 * dim:]


def channel_self_attention(layer, x: torch.Tensor):
    """ChannelSelfAttention's ``attend``: per image and head, the ``d`` channels (vectors over the pixels) attend
    to each other with cosine similarity times the head's temperature."""
    x = _f64(x)
    batch, height, width, dim = x.shape
    heads, d = layer.num_heads, dim // layer.num_heads
    qkv = linear(x, layer.qkv).reshape(batch, height * width, 3 * dim)
    out = torch.zeros(batch, height * width, dim, dtype=torch.float64)
    for b in range(batch):
        for h, (q, k, v) in _heads(qkv[b], heads, d):  # each (pixels, d)
            q = q / q.norm(dim=0, keepdim=True).clamp_min(1e-12)
            k = k / k.norm(dim=0, keepdim=True).clamp_min(1e-12)
            scores = q.T @ k * _f64(layer.temperature[h, 0, 0])  # (d, d)
            weights = torch.softmax(scores, dim=-1)
            out[b, :, h * d:(h + 1) * d] = (weights @ v.T).T
    return out.reshape(batch, height, width, dim), qkv[..., 2 * dim:].reshape(batch, height, width, dim)


def depthwise_conv2d_same(x: torch.Tensor, conv) -> torch.Tensor:
    """A depthwise 'same' convolution (``groups = channels``) on (B, H, W, C) by explicit shifted sums."""
    weight = _f64(conv.weight)  # (C, 1, kh, kw)
    kh, kw = weight.shape[-2:]
    padded = torch.nn.functional.pad(x, (0, 0, kw // 2, kw // 2, kh // 2, kh // 2))
    height, width = x.shape[1:3]
    out = torch.zeros_like(x, dtype=torch.float64)
    for dy in range(kh):
        for dx in range(kw):
            out += padded[:, dy:dy + height, dx:dx + width] * weight[:, 0, dy, dx]
    return out + _f64(conv.bias)


def batch_norm_eval(x: torch.Tensor, norm) -> torch.Tensor:
    """BatchNorm with its running statistics, channels last."""
    scale = _f64(norm.weight) / torch.sqrt(_f64(norm.running_var) + norm.eps)
    return (x - _f64(norm.running_mean)) * scale + _f64(norm.bias)


def _conv_1x1(x: torch.Tensor, conv) -> torch.Tensor:
    return x @ _f64(conv.weight[:, :, 0, 0]).T + _f64(conv.bias)


def adaptive_interaction(layer, x: torch.Tensor, attend) -> torch.Tensor:
    """AdaptiveInteraction in eval: ``attend(attention, x) -> (attended, values)``; the convolution branch on the
    values; the channel gate (pooled, 1x1, BN, GELU, 1x1) and the spatial gate (per pixel 1x1, BN, GELU, 1x1) each
    from one branch scaling the other; the attention's output projection."""
    attended, values = attend(layer.attention, x)
    conv_layer, norm, _ = layer.dwconv
    conv = gelu(batch_norm_eval(depthwise_conv2d_same(values, conv_layer), norm))

    def channel_gate(t):  # (B, H, W, C) -> (B, 1, 1, C)
        _, first, norm_, _, second = layer.channel_interaction
        pooled = t.mean(dim=(1, 2), keepdim=True)
        return torch.sigmoid(_conv_1x1(gelu(batch_norm_eval(_conv_1x1(pooled, first), norm_)), second))

    def spatial_gate(t):  # (B, H, W, C) -> (B, H, W, 1)
        first, norm_, _, second = layer.spatial_interaction
        return torch.sigmoid(_conv_1x1(gelu(batch_norm_eval(_conv_1x1(t, first), norm_)), second))

    if layer.attention_gate == "channel":
        mixed = attended * channel_gate(conv) + conv * spatial_gate(attended)
    else:
        mixed = attended * spatial_gate(conv) + conv * channel_gate(attended)
    return linear(mixed, layer.attention.proj)


def spatial_gate_mlp(layer, x: torch.Tensor) -> torch.Tensor:
    """``fc2(h1 * dwconv(LN(h2)))`` with ``h1, h2`` the halves of ``GELU(fc1(x))``."""
    hidden = gelu(linear(_f64(x), layer.fc1))
    kept, gate = hidden.chunk(2, dim=-1)
    return linear(kept * depthwise_conv2d_same(layer_norm(gate, layer.norm), layer.conv), layer.fc2)
