"""Partitions, padding, masks and relative-position indices against explicit index arithmetic."""

import numpy as np
import pytest
import reference
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import random_map, seeds

from gridattn.functional import (
    fixed_grid_partition,
    fixed_grid_reverse,
    grid_attention_mask,
    grid_partition,
    grid_reverse,
    pad_to_multiple,
    padded_size,
    relative_offsets,
    relative_position_index,
    unpad,
    window_attention_mask,
    window_partition,
    window_reverse,
)

units = st.tuples(st.integers(1, 5), st.integers(1, 5))


@st.composite
def divisible_maps(draw):
    unit = draw(units)
    count_h, count_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    x = random_map(draw(seeds), draw(st.integers(1, 3)), unit[0] * count_h, unit[1] * count_w, draw(st.integers(1, 4)))
    return x, unit


@given(divisible_maps())
def test_window_partition_by_index(case):
    x, (wh, ww) = case
    batch, height, width, _ = x.shape
    windows = window_partition(x, (wh, ww))
    per_row = width // ww
    assert windows.shape == (batch * (height // wh) * per_row, wh, ww, x.shape[-1])
    for b in range(batch):
        for y in range(height):
            for x_ in range(width):
                index = b * (height // wh) * per_row + (y // wh) * per_row + x_ // ww
                assert torch.equal(windows[index, y % wh, x_ % ww], x[b, y, x_])
    assert torch.equal(window_reverse(windows, (wh, ww), height, width), x)


@given(divisible_maps())
def test_grid_partition_by_index(case):
    """HMANet's grid shuffle: token (a*K + i, b*K + j) -> group (i, j), position (a, b)."""
    x, (ih, iw) = case
    batch, height, width, _ = x.shape
    groups = grid_partition(x, (ih, iw))
    assert groups.shape == (batch * ih * iw, height // ih, width // iw, x.shape[-1])
    for b in range(batch):
        for y in range(height):
            for x_ in range(width):
                index = b * ih * iw + (y % ih) * iw + x_ % iw
                assert torch.equal(groups[index, y // ih, x_ // iw], x[b, y, x_])
    assert torch.equal(grid_reverse(groups, (ih, iw), height, width), x)


@given(divisible_maps())
def test_fixed_grid_is_interval_grid_with_interval_size_over_grid(case):
    """MaxViT's G x G grid (stride H/G) is the interval grid with interval H/G: same tensor, same order."""
    x, grid = case  # sizes are multiples of `grid`
    batch, height, width, _ = x.shape
    fixed = fixed_grid_partition(x, grid)
    assert fixed.shape[1:3] == grid
    # MaxViT's definition, by index: group (i, j) holds the tokens (g_h * H/G + i, g_w * W/G + j)
    stride_h, stride_w = height // grid[0], width // grid[1]
    for gh in range(grid[0]):
        for gw in range(grid[1]):
            expected = x[:, gh * stride_h:(gh + 1) * stride_h, gw * stride_w:(gw + 1) * stride_w]
            assert torch.equal(fixed[:, gh, gw].reshape(batch, stride_h, stride_w, -1), expected)
    assert torch.equal(fixed, grid_partition(x, (stride_h, stride_w)))
    assert torch.equal(fixed_grid_reverse(fixed, grid, height, width), x)


def test_partitions_reject_sizes_that_are_not_multiples():
    x = torch.zeros(1, 10, 12, 3)
    with pytest.raises(ValueError, match="not a multiple of the window size"):
        window_partition(x, 4)
    with pytest.raises(ValueError, match="not a multiple of the interval"):
        grid_partition(x, 4)
    with pytest.raises(ValueError, match="grid size"):
        fixed_grid_partition(x, 3)
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        window_partition(x, 0)
    with pytest.raises(ValueError, match="4-D"):
        window_partition(torch.zeros(10, 12, 3), 2)


NUMPY_MODES = {"zero": "constant", "symmetric": "symmetric", "reflect": "reflect", "replicate": "edge"}


@given(seed=seeds, height=st.integers(1, 9), width=st.integers(1, 9), multiple=units,
       mode=st.sampled_from(sorted(NUMPY_MODES)))
def test_pad_to_multiple_matches_numpy_pad(seed, height, width, multiple, mode):
    """Any amount of padding, also more than the input size; numpy.pad is the reference."""
    x = random_map(seed, 2, height, width, 3)
    padded = pad_to_multiple(x, multiple, mode=mode)
    new_h, new_w = padded_size(height, width, multiple)
    expected = np.pad(x.numpy(), ((0, 0), (0, new_h - height), (0, new_w - width), (0, 0)), mode=NUMPY_MODES[mode])
    np.testing.assert_array_equal(padded.numpy(), expected)
    assert torch.equal(unpad(padded, height, width), x)


@given(seed=seeds, height=st.integers(1, 9), width=st.integers(1, 9), multiple=st.integers(1, 9))
def test_symmetric_padding_is_the_official_mirror_padding(seed, height, width, multiple):
    """The official HMANet test code pads images (B, C, H, W) with cat([x, flip(x)]) and crops."""
    image = random_map(seed, 1, 3, height, width).contiguous()  # used as (B, C, H, W)
    new_h, new_w = padded_size(height, width, multiple)
    if new_h > 2 * height or new_w > 2 * width:
        return  # the official trick mirrors once only
    official = torch.cat([image, torch.flip(image, [2])], 2)[:, :, :new_h]
    official = torch.cat([official, torch.flip(official, [3])], 3)[:, :, :, :new_w]
    assert torch.equal(pad_to_multiple(image, multiple, mode="symmetric", dims=(-2, -1)), official)


def test_padding_errors_and_no_op():
    x = torch.zeros(1, 4, 4, 2)
    assert pad_to_multiple(x, 4) is x
    with pytest.raises(ValueError, match="unknown padding mode"):
        pad_to_multiple(x, 3, mode="wrap")
    with pytest.raises(ValueError, match="larger size"):
        unpad(x, 5, 4)


@given(window=st.integers(2, 6), windows_h=st.integers(1, 4), windows_w=st.integers(1, 4), data=st.data())
def test_shifted_window_mask_equals_swin_mask(window, windows_h, windows_w, data):
    shift = data.draw(st.integers(1, window - 1))
    height, width = window * windows_h, window * windows_w
    ours = window_attention_mask(height, width, window, shift)
    swin = reference.swin_region_mask(height, width, window, shift)
    assert torch.equal(ours == 0, swin == 0)
    assert torch.isneginf(ours[ours != 0]).all()
    assert window_attention_mask(height, width, window, 0) is None


@given(height=st.integers(1, 12), width=st.integers(1, 12), window=st.integers(1, 5), data=st.data())
def test_window_mask_never_lets_real_tokens_see_padding_and_never_masks_a_whole_row(height, width, window, data):
    shift = data.draw(st.integers(0, window - 1))
    mask = window_attention_mask(height, width, window, shift)
    new_h, new_w = padded_size(height, width, window)
    if mask is None:
        assert shift == 0 and (new_h, new_w) == (height, width)
        return
    real = torch.zeros(1, new_h, new_w, 1)
    real[:, :height, :width] = 1
    real = window_partition(torch.roll(real, (-shift, -shift), (1, 2)), window).flatten(1).bool()  # (nW, N)
    allowed = mask == 0
    assert not (allowed & real[:, :, None] & ~real[:, None, :]).any()  # real query, padding key
    assert allowed.any(-1).all()


@given(height=st.integers(1, 12), width=st.integers(1, 12), interval=units)
def test_grid_mask_separates_real_tokens_from_padding(height, width, interval):
    mask = grid_attention_mask(height, width, interval)
    new_h, new_w = padded_size(height, width, interval)
    if mask is None:
        assert (new_h, new_w) == (height, width)
        return
    real = torch.zeros(1, new_h, new_w, 1)
    real[:, :height, :width] = 1
    real = grid_partition(real, interval).flatten(1).bool()
    allowed = mask == 0
    assert torch.equal(allowed, real[:, :, None] == real[:, None, :])


@given(h=st.integers(1, 7), w=st.integers(1, 7))
def test_relative_position_index_and_offsets(h, w):
    index = relative_position_index((h, w))
    offsets = relative_offsets((h, w))
    assert offsets.shape == ((2 * h - 1) * (2 * w - 1), 2)
    tokens = [(y, x) for y in range(h) for x in range(w)]
    for n, (yn, xn) in enumerate(tokens):
        for m, (ym, xm) in enumerate(tokens):
            assert index[n, m] == (yn - ym + h - 1) * (2 * w - 1) + (xn - xm + w - 1)
            assert offsets[index[n, m]].tolist() == [yn - ym, xn - xm]
