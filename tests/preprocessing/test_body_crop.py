"""Tests for ctvoco.preprocessing.body_crop (and the body crop inside preprocess_volume)."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.errors import DataError
from ctvoco.io.volume import CTVolume
from ctvoco.preprocessing.body_crop import (
    MASK_MAX_SIDE,
    CropBox,
    body_box,
    clip_box,
    largest_component,
    mask_stride,
)
from ctvoco.preprocessing.pipeline import PreprocessConfig, preprocess_volume
from ctvoco.preprocessing.window import windowed_threshold_hu
from tests.conftest import small_phantom

SHAPE = (12, 48, 56)
THRESHOLD_HU = windowed_threshold_hu(10.0, -150.0, 250.0)  # the pipeline's default body threshold


def body_extent(hu: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns (inclusive) of the body ellipse: everything above threshold except the table."""
    table = int(0.9 * hu.shape[1])
    mask = (hu > THRESHOLD_HU).any(axis=0)
    mask[table:] = False
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


# (name, mask, expected largest component)
COMPONENT_CASES = [
    ("empty", np.zeros((4, 5), bool), np.zeros((4, 5), bool)),
    ("single", np.pad(np.ones((2, 2), bool), 1), np.pad(np.ones((2, 2), bool), 1)),
    (
        "two_blobs",
        np.array([[1, 1, 0, 0, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool),
        np.array([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool),
    ),
    (
        "diagonal_is_connected",
        np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1]], bool),
        np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1]], bool),
    ),
    (
        "table_band_smaller",
        np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]], bool),
        np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool),
    ),
]


@pytest.mark.parametrize(
    ("mask", "expected"), [c[1:] for c in COMPONENT_CASES], ids=[c[0] for c in COMPONENT_CASES]
)
def test_largest_component(mask, expected):
    out = largest_component(mask)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, expected)


def test_body_box_excludes_table():
    hu = small_phantom()
    box = body_box(hu > THRESHOLD_HU, margin=0)
    r0, r1, c0, c1 = body_extent(hu)
    assert box == CropBox(0, SHAPE[0], r0, r1 + 1, c0, c1 + 1)
    table = int(0.9 * SHAPE[1])
    assert box.y1 <= table


@pytest.mark.parametrize("margin", [0, 1, 4])
def test_body_box_margin(margin):
    hu = small_phantom()
    r0, r1, c0, c1 = body_extent(hu)
    box = body_box(hu > THRESHOLD_HU, margin=margin)
    assert (box.y0, box.y1, box.x0, box.x1) == (
        r0 - margin,
        r1 + 1 + margin,
        c0 - margin,
        c1 + 1 + margin,
    )


def test_body_box_margin_is_clipped():
    hu = small_phantom()
    box = body_box(hu > THRESHOLD_HU, margin=100)
    assert (box.y0, box.x0) == (0, 0)  # clipped at zero by body_box itself
    assert box.y1 > SHAPE[1]  # the far side is left to clip_box
    clipped = clip_box(box, hu.shape)
    assert clipped == CropBox.full(hu.shape)


def test_body_box_with_stride():
    hu = small_phantom()
    full = body_box(hu > THRESHOLD_HU, margin=0)
    strided = body_box(hu[:, ::2, ::2] > THRESHOLD_HU, stride=2, margin=0)
    # a strided mask always gets at least stride - 1 of margin, so its box covers the body
    # and exceeds the full-resolution box by less than two strides
    for lo in ("y0", "x0"):
        assert 0 <= getattr(full, lo) - getattr(strided, lo) < 4
    for hi in ("y1", "x1"):
        assert 0 <= getattr(strided, hi) - getattr(full, hi) < 4
    assert (strided.z0, strided.z1) == (full.z0, full.z1)
    # a margin of at least stride - 1 covers what the sampling missed
    with_margin = body_box(hu[:, ::2, ::2] > THRESHOLD_HU, stride=2, margin=1)
    assert with_margin.y0 <= full.y0 and with_margin.x0 <= full.x0


def test_empty_slices_dropped_at_both_ends_only():
    hu = small_phantom()
    hu[:3] = -1000
    hu[10:] = -1000
    hu[6] = -1000  # an interior empty slice stays
    box = body_box(hu > THRESHOLD_HU)
    assert (box.z0, box.z1) == (3, 10)


def test_tiny_slices_count_as_empty():
    hu = small_phantom()
    hu[:2] = -1000
    hu[:2, 20:22, 20:22] = 40  # 4 voxels < 1% of 48 x 56
    hu[-1] = -1000
    hu[-1, 5:7, 5:7] = 40
    box = body_box(hu > THRESHOLD_HU)
    assert (box.z0, box.z1) == (2, SHAPE[0] - 1)
    # with no minimum area the specks count
    box = body_box(hu > THRESHOLD_HU, min_area_fraction=0.0)
    assert (box.z0, box.z1) == (0, SHAPE[0])


def test_table_larger_than_body_in_a_slice_is_taken():
    """Per-slice largest component: documented behaviour on a slice with a tiny body."""
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 2:4, 2:4] = True  # body, 4 voxels
    mask[0, 18, 1:19] = True  # table, 18 voxels
    box = body_box(mask, margin=0, min_area_fraction=0.0)
    assert (box.y0, box.y1, box.x0, box.x1) == (18, 19, 1, 19)


def test_all_air_raises():
    air = np.full(SHAPE, -1000, dtype=np.int16)
    with pytest.raises(ValueError, match="no body found"):
        body_box(air > THRESHOLD_HU)


def test_preprocess_volume_all_air_names_the_source(tmp_path):
    volume = CTVolume(
        hu=np.full(SHAPE, -1000, dtype=np.int16),
        spacing=(2.5, 0.8, 0.7),
        source=str(tmp_path / "air_only.nii.gz"),
    )
    with pytest.raises(DataError, match=r"air_only\.nii\.gz: no body found"):
        preprocess_volume(volume, PreprocessConfig(shape=(4, 16, 16)))
    # without the body crop an all-air volume is fine (all zeros)
    result = preprocess_volume(volume, PreprocessConfig(shape=(4, 16, 16), body_crop=False))
    np.testing.assert_array_equal(result.array, 0)


def test_crop_box_helpers():
    box = CropBox(1, 5, 2, 8, 3, 10)
    assert box.shape == (4, 6, 7)
    assert str(box) == "1:5,2:8,3:10"
    volume = np.zeros((6, 9, 12))
    assert volume[box.slices].shape == box.shape
    assert CropBox.full((6, 9, 12)) == CropBox(0, 6, 0, 9, 0, 12)
    assert CropBox.full((2, 6, 9, 12)) == CropBox(0, 6, 0, 9, 0, 12)  # channels first
    assert clip_box(CropBox(-2, 9, -1, 20, 4, 5), (6, 9, 12)) == CropBox(0, 6, 0, 9, 4, 5)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (48, 56, 1),
        (64, 64, 1),
        (65, 10, 2),
        (128, 128, 2),
        (10, 256, 4),
        (512, 512, 8),
        (600, 100, 10),
    ],
)
def test_mask_stride(height, width, expected):
    stride = mask_stride(height, width)
    assert stride == expected
    assert -(-max(height, width) // stride) <= MASK_MAX_SIDE
