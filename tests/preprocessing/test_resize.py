"""Tests for ctvoco.preprocessing.resize.area_resize."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.preprocessing.resize import CV2_MAX_WIDTH, area_resize


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Exact box-average weights ``(n_out, n_in)`` for downsampling (independent reference)."""
    scale = n_in / n_out
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        start, stop = i * scale, (i + 1) * scale
        for j in range(int(np.floor(start)), min(n_in, int(np.ceil(stop)))):
            weights[i, j] = (min(stop, j + 1) - max(start, j)) / scale
    return weights


def reference_resize(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Separable exact area averaging along each axis (downsampling or same size only)."""
    out = volume.astype(np.float64)
    for axis, n_out in enumerate(shape):
        weights = area_matrix(out.shape[axis], n_out)
        out = np.moveaxis(np.tensordot(weights, np.moveaxis(out, axis, 0), axes=1), 0, axis)
    return out


# (name, input shape, output shape)
CONSTANT_CASES = [
    ("down", (6, 20, 30), (4, 9, 11)),
    ("up", (3, 5, 7), (7, 16, 9)),
    ("same_depth", (5, 20, 30), (5, 10, 10)),
    ("identity", (4, 8, 8), (4, 8, 8)),
    ("to_one_voxel", (5, 6, 7), (1, 1, 1)),
]


@pytest.mark.parametrize(
    ("in_shape", "out_shape"), [c[1:] for c in CONSTANT_CASES], ids=[c[0] for c in CONSTANT_CASES]
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_constant_stays_constant(in_shape, out_shape, dtype):
    out = area_resize(np.full(in_shape, 7, dtype=dtype), out_shape)
    assert out.shape == out_shape
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 7.0, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("in_shape", "factors"),
    [((8, 12, 16), (2, 2, 2)), ((9, 12, 20), (3, 4, 5)), ((6, 10, 10), (1, 2, 5))],
)
def test_integer_factor_is_block_mean(in_shape, factors):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, size=in_shape).astype(np.uint8)
    out_shape = tuple(n // f for n, f in zip(in_shape, factors, strict=True))
    blocks = volume.astype(np.float64).reshape(
        out_shape[0], factors[0], out_shape[1], factors[1], out_shape[2], factors[2]
    )
    expected = blocks.mean(axis=(1, 3, 5))
    np.testing.assert_allclose(area_resize(volume, out_shape), expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    ("in_shape", "out_shape"), [((10, 50, 70), (7, 33, 41)), ((13, 37, 29), (5, 17, 23))]
)
def test_non_integer_factor(in_shape, out_shape):
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 256, size=in_shape).astype(np.uint8)
    out = area_resize(volume, out_shape)
    assert out.shape == out_shape
    # every input voxel is averaged with its exact fractional overlap
    np.testing.assert_allclose(out, reference_resize(volume, out_shape), rtol=0, atol=1e-3)
    # so the mean intensity is preserved
    assert out.mean() == pytest.approx(volume.mean(), rel=0.01)
    assert volume.min() <= out.min() and out.max() <= volume.max()


def test_upsampling():
    rng = np.random.default_rng(2)
    volume = rng.random((3, 4, 5)).astype(np.float32)
    out = area_resize(volume, (6, 8, 10))
    assert out.shape == (6, 8, 10)
    assert out.dtype == np.float32
    assert volume.min() - 1e-6 <= out.min() and out.max() <= volume.max() + 1e-6
    assert out.mean() == pytest.approx(volume.mean(), rel=0.05)
    # a linear ramp along z stays monotone
    ramp = np.broadcast_to(np.arange(4, dtype=np.float32)[:, None, None], (4, 3, 3))
    up = area_resize(np.ascontiguousarray(ramp), (8, 3, 3))
    assert np.all(np.diff(up[:, 1, 1]) >= 0)
    assert up[0, 1, 1] == pytest.approx(0.0) and up[-1, 1, 1] == pytest.approx(3.0)


def test_big_in_plane_uses_column_blocks():
    """h * w > CV2_MAX_WIDTH: the z resize is done in column blocks; compare per column."""
    h, w = 150, 220
    assert h * w > CV2_MAX_WIDTH
    rng = np.random.default_rng(3)
    volume = rng.integers(0, 256, size=(5, h, w)).astype(np.uint8)
    for depth in (3, 2):
        out = area_resize(volume, (depth, h, w))
        columns = volume.reshape(5, -1).astype(np.float64)
        expected = (area_matrix(5, depth) @ columns).reshape(depth, h, w)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-3)
    # in-plane and z together
    out = area_resize(volume, (2, 75, 110))
    np.testing.assert_allclose(out, reference_resize(volume, (2, 75, 110)), rtol=0, atol=1e-3)


def test_big_in_plane_upsampling_in_z():
    h, w = 160, 210
    volume = np.random.default_rng(4).random((2, h, w)).astype(np.float32)
    out = area_resize(volume, (4, h, w))
    assert out.shape == (4, h, w)
    # the first and last block of columns are resized alike
    small = area_resize(np.ascontiguousarray(volume[:, :10, :10]), (4, 10, 10))
    np.testing.assert_allclose(out[:, :10, :10], small, rtol=0, atol=1e-5)
    small = area_resize(np.ascontiguousarray(volume[:, -10:, -10:]), (4, 10, 10))
    np.testing.assert_allclose(out[:, -10:, -10:], small, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 5), (1, 2, 3, 4)])
def test_rejects_non_3d(shape):
    with pytest.raises(ValueError, match=r"expects \(D, H, W\)"):
        area_resize(np.zeros(shape, dtype=np.float32), (2, 2, 2))


@pytest.mark.parametrize("target", [(0, 4, 4), (4, 0, 4), (4, 4, -1)])
def test_rejects_non_positive_target(target):
    with pytest.raises(ValueError, match="must be positive"):
        area_resize(np.zeros((4, 4, 4), dtype=np.float32), target)


def test_reference_matrix_rows_sum_to_one():
    for n_in, n_out in [(5, 3), (10, 7), (8, 8), (256, 96)]:
        np.testing.assert_allclose(area_matrix(n_in, n_out).sum(axis=1), 1.0)
