"""Tests for ctvoco.preprocessing.window."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.preprocessing.window import (
    apply_window,
    apply_window_per_slice_minmax,
    window_lut,
    windowed_threshold_hu,
)

DEFAULT_WINDOW = (-150.0, 250.0)

# (hu, expected uint8) for the default window [-150, 250]: round(clip((hu+150)/400) * 255)
DEFAULT_WINDOW_CASES = [
    (-32768, 0),
    (-1000, 0),
    (-151, 0),
    (-150, 0),
    (-149, 1),  # 0.6375 -> 1
    (-110, 26),  # 25.5 -> 26 (round half to even)
    (-30, 76),  # 76.5 -> 76 (round half to even)
    (0, 96),  # 95.625
    (40, 121),  # 121.125
    (50, 128),  # 127.5 -> 128
    (200, 223),  # 223.125
    (249, 254),  # 254.3625
    (250, 255),
    (1000, 255),
    (32767, 255),
]


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize(("hu", "expected"), DEFAULT_WINDOW_CASES)
def test_default_window_values(hu, expected, dtype):
    out = apply_window(np.array([hu], dtype=dtype), *DEFAULT_WINDOW)
    assert out.dtype == np.uint8
    assert out.tolist() == [expected]


# (low, high, hu, expected)
OTHER_WINDOW_CASES = [
    (-175.0, 250.0, 0, 105),  # FLARE window: 175/425*255 = 105
    (-175.0, 250.0, -175, 0),
    (-175.0, 250.0, 250, 255),
    (-1000.0, 1000.0, 0, 128),  # 127.5 -> 128
    (0.0, 1.0, 1, 255),
    (0.0, 1.0, 0, 0),
]


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize(("low", "high", "hu", "expected"), OTHER_WINDOW_CASES)
def test_other_windows(low, high, hu, expected, dtype):
    assert apply_window(np.array([hu], dtype=dtype), low, high).tolist() == [expected]


@pytest.mark.parametrize(
    "window", [DEFAULT_WINDOW, (-175.0, 250.0), (-1000.0, 1000.0), (-1000.5, 1234.25), (40.0, 41.0)]
)
def test_lut_path_equals_float_path(window):
    hu = np.arange(-2000, 3001, dtype=np.int16)
    via_lut = apply_window(hu, *window)
    via_float = apply_window(hu.astype(np.float32), *window)
    np.testing.assert_array_equal(via_lut, via_float)
    # and both equal the formula in float64
    expected = np.rint(np.clip((hu - window[0]) / (window[1] - window[0]), 0, 1) * 255)
    np.testing.assert_array_equal(via_lut, expected.astype(np.uint8))


def test_window_lut_properties():
    lut = window_lut(*DEFAULT_WINDOW)
    assert lut.shape == (65536,)
    assert lut.dtype == np.uint8
    assert not lut.flags.writeable
    assert window_lut(*DEFAULT_WINDOW) is lut  # cached
    # indexed by the two's complement bit pattern
    assert lut[np.array([-1000], dtype=np.int16).view(np.uint16)[0]] == 0
    assert lut[250] == 255
    assert lut[50] == 128
    assert np.all(np.diff(lut[:32768].astype(int)) >= 0)  # monotone over non-negative HU


def test_apply_window_keeps_shape_and_handles_views():
    rng = np.random.default_rng(0)
    hu = rng.integers(-1200, 1500, size=(4, 10, 12)).astype(np.int16)
    view = hu[:, ::2, ::3]  # not contiguous
    out = apply_window(view, *DEFAULT_WINDOW)
    assert out.shape == view.shape
    np.testing.assert_array_equal(out, apply_window(view.astype(np.float32), *DEFAULT_WINDOW))


@pytest.mark.parametrize("window", [(250.0, -150.0), (100.0, 100.0)])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_bad_window_raises(window, dtype):
    with pytest.raises(ValueError, match="high > low"):
        apply_window(np.zeros((2, 2), dtype=dtype), *window)
    with pytest.raises(ValueError, match="high > low"):
        apply_window_per_slice_minmax(np.zeros((1, 2, 2), dtype=dtype), *window)


def test_window_lut_bad_window():
    with pytest.raises(ValueError, match="high > low"):
        window_lut(10.0, -10.0)


def test_per_slice_minmax_stretches_each_slice():
    hu = np.zeros((4, 2, 3), dtype=np.int16)
    hu[0] = [[-100, -50, 0], [50, 100, 100]]  # inside the window: stretched to 0..255
    hu[1] = [[0, 10, 20], [30, 40, 50]]  # narrow range: also stretched to 0..255
    hu[2] = 40  # constant slice: 0
    hu[3] = [[-1000, -150, 0], [100, 250, 3000]]  # clipped to the window first
    out = apply_window_per_slice_minmax(hu, *DEFAULT_WINDOW)
    assert out.dtype == np.uint8
    assert out.shape == hu.shape
    for z in (0, 1, 3):
        clipped = np.clip(hu[z].astype(float), *DEFAULT_WINDOW)
        expected = np.rint((clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255)
        np.testing.assert_array_equal(out[z], expected)
        assert out[z].min() == 0
        assert out[z].max() == 255
    np.testing.assert_array_equal(out[2], 0)
    np.testing.assert_array_equal(out[1], [[0, 51, 102], [153, 204, 255]])
    # a fixed window keeps the slices comparable: slice 1 stays mid-grey
    fixed = apply_window(hu, *DEFAULT_WINDOW)
    assert fixed[1].max() < 140
    assert not np.array_equal(fixed, out)


@pytest.mark.parametrize(
    ("threshold", "window", "expected"),
    [
        (0.0, DEFAULT_WINDOW, -150.0),
        (255.0, DEFAULT_WINDOW, 250.0),
        (10.0, DEFAULT_WINDOW, -150 + 4000 / 255),
    ],
)
def test_windowed_threshold_hu(threshold, window, expected):
    hu = windowed_threshold_hu(threshold, *window)
    assert hu == pytest.approx(expected)
    # it is the inverse of the window mapping
    assert (hu - window[0]) / (window[1] - window[0]) * 255 == pytest.approx(threshold)
