"""Tests for ctvoco.voco.targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctvoco.voco.targets import (
    crop_starts,
    overlap_targets,
    sample_center_range,
    sample_random_centers,
    valid_center_range,
)


def one_hot(n_cells: int, entries: dict[int, float]) -> list[float]:
    row = [0.0] * n_cells
    for j, value in entries.items():
        row[j] = value
    return row


# (centre (row, col), n, r, expected row of targets). Crop rows: [cy - r//2, cy - r//2 + r).
CASES = [
    # n=3, r=4: centre (6, 6) -> crop [4, 8)x[4, 8) = base cell (1, 1), j = 4.
    ((6, 6), 3, 4, one_hot(9, {4: 1.0})),
    # centre (2, 2) -> crop [0, 4)x[0, 4) = cell 0 (top-left corner of the canvas).
    ((2, 2), 3, 4, one_hot(9, {0: 1.0})),
    # centre (10, 10) -> crop [8, 12)x[8, 12) = cell 8 (largest valid centre, bottom-right).
    ((10, 10), 3, 4, one_hot(9, {8: 1.0})),
    # centre (4, 4) -> crop [2, 6)x[2, 6): the corner shared by cells 0, 1, 3, 4; 2x2 px each.
    ((4, 4), 3, 4, one_hot(9, {0: 0.25, 1: 0.25, 3: 0.25, 4: 0.25})),
    # centre (6, 4) -> rows [4, 8) = grid row 1, cols [2, 6) half in col 0, half in col 1.
    ((6, 4), 3, 4, one_hot(9, {3: 0.5, 4: 0.5})),
    # centre (4, 6) -> rows [2, 6) half in rows 0/1, cols [4, 8) = grid col 1.
    ((4, 6), 3, 4, one_hot(9, {1: 0.5, 4: 0.5})),
    # centre (5, 9) -> rows [3, 7): 1 px in row 0, 3 px in row 1; cols [7, 11): 1 px col 1,
    # 3 px col 2. Areas /16: j1 = 1*1, j2 = 1*3, j4 = 3*1, j5 = 3*3.
    ((5, 9), 3, 4, one_hot(9, {1: 1 / 16, 2: 3 / 16, 4: 3 / 16, 5: 9 / 16})),
    # Odd r=3, n=2 (canvas 6): centre (1, 1) is the middle pixel of crop [0, 3)x[0, 3).
    ((1, 1), 2, 3, one_hot(4, {0: 1.0})),
    # r=3, centre (2, 4) -> rows [1, 4): 2 px row 0, 1 px row 1; cols [3, 6) = col 1.
    ((2, 4), 2, 3, one_hot(4, {1: 2 / 3, 3: 1 / 3})),
    # n=1: the only valid crop is the canvas itself.
    ((2, 2), 1, 4, [1.0]),
]


@pytest.mark.parametrize(("center", "n", "r", "expected"), CASES)
def test_hand_computed(center, n, r, expected):
    y = overlap_targets(torch.tensor([center]), n, r)
    assert y.dtype == torch.float32
    assert y.shape == (1, n * n)
    torch.testing.assert_close(y[0], torch.tensor(expected), rtol=0, atol=1e-7)


def paint_reference(centers: np.ndarray, n: int, r: int) -> np.ndarray:
    """Brute force: paint each crop as a mask and count the pixels inside every base cell."""
    out = np.zeros((len(centers), n * n))
    for k, (cy, cx) in enumerate(centers):
        mask = np.zeros((n * r, n * r), dtype=bool)
        mask[cy - r // 2 : cy - r // 2 + r, cx - r // 2 : cx - r // 2 + r] = True
        assert mask.sum() == r * r
        for row in range(n):
            for col in range(n):
                cell = mask[row * r : (row + 1) * r, col * r : (col + 1) * r]
                out[k, n * row + col] = cell.sum() / r**2
    return out


@pytest.mark.parametrize(("n", "r"), [(3, 4), (3, 8), (2, 5), (4, 3), (3, 64), (2, 1)])
def test_random_centres_match_painted_masks(n, r):
    rng = np.random.default_rng(n * 100 + r)
    centers = sample_random_centers(rng, 20, n, r)
    y = overlap_targets(centers, n, r)
    np.testing.assert_allclose(y.numpy(), paint_reference(centers, n, r), atol=1e-7)
    torch.testing.assert_close(y.sum(-1), torch.ones(20))


def test_batched_equals_per_item_and_keeps_device():
    rng = np.random.default_rng(0)
    centers = np.stack([sample_random_centers(rng, 5, 3, 8) for _ in range(4)])  # (4, 5, 2)
    batched = overlap_targets(torch.from_numpy(centers), 3, 8)
    assert batched.shape == (4, 5, 9)
    for b in range(4):
        torch.testing.assert_close(batched[b], overlap_targets(centers[b], 3, 8), rtol=0, atol=0)


def test_accepts_lists_numpy_and_integral_floats():
    expected = overlap_targets(torch.tensor([[6, 4]]), 3, 4)
    for centers in ([[6, 4]], np.array([[6, 4]], dtype=np.int32), np.array([[6.0, 4.0]])):
        torch.testing.assert_close(overlap_targets(centers, 3, 4), expected)


def test_empty_k():
    assert overlap_targets(np.zeros((0, 2), dtype=np.int64), 3, 4).shape == (0, 9)


@pytest.mark.parametrize(
    ("n", "r", "expected"),
    [(3, 4, (2, 10)), (3, 64, (32, 160)), (2, 3, (1, 4)), (3, 5, (2, 12)), (1, 4, (2, 2))],
)
def test_valid_center_range(n, r, expected):
    assert valid_center_range(n, r) == expected
    lo, hi = expected
    # crop [c - r//2, c - r//2 + r) lies inside [0, n*r) exactly for c in [lo, hi].
    assert crop_starts(lo, r) == 0
    assert crop_starts(hi, r) + r == n * r


BAD_CENTERS = [
    ([[1, 6]], "must lie in"),  # row start -1
    ([[6, 11]], "must lie in"),  # col end 13 > 12
    ([[-3, 6]], "must lie in"),
    ([6, 6], "must be \\(K, 2\\)"),
    ([[6, 6, 6]], "must be \\(K, 2\\)"),
    (np.zeros((1, 1, 1, 2), dtype=int) + 6, "must be \\(K, 2\\)"),
    ([[6.5, 6.0]], "integer values"),
    ([[True, False]], "integers"),
]


@pytest.mark.parametrize(("centers", "match"), BAD_CENTERS)
def test_invalid_centres_raise(centers, match):
    with pytest.raises(ValueError, match=match):
        overlap_targets(centers, 3, 4)


@pytest.mark.parametrize(("n", "r"), [(0, 4), (3, 0), (3, 2.0), (True, 4)])
def test_invalid_grid_raises(n, r):
    with pytest.raises(ValueError, match="positive integer"):
        overlap_targets([[6, 6]], n, r)


@pytest.mark.parametrize(
    ("n", "r", "expected"),
    [(3, 4, (2, 10)), (3, 64, (32, 160)), (2, 3, (2, 5)), (3, 5, (3, 13)), (2, 1, (1, 2))],
)
def test_sample_center_range_is_the_spec_half_open_interval(n, r, expected):
    lo, hi = sample_center_range(n, r)
    assert (lo, hi) == expected
    # exactly the integers c with r/2 <= c < n*r - r/2 (docs/algorithms.md §2.1)
    assert list(range(lo, hi)) == [c for c in range(-r, n * r + r) if r / 2 <= c < n * r - r / 2]
    assert hi - lo == n * r - r
    valid_lo, valid_hi = valid_center_range(n, r)
    assert valid_lo <= lo and hi - 1 <= valid_hi, "every drawn crop lies inside the canvas"


@pytest.mark.parametrize(
    ("n", "r", "smallest", "largest"),
    [
        (3, 4, 2, 9),  # even r: the last valid centre 10 (crop [8, 12)) is never drawn
        (3, 5, 3, 12),  # odd r: the first valid centre 2 (crop [0, 5)) is never drawn
        (2, 3, 2, 4),
    ],
)
def test_sample_random_centers_reach_both_ends_of_the_half_open_range(n, r, smallest, largest):
    centers = sample_random_centers(np.random.default_rng(1), 5000, n, r)
    assert centers.shape == (5000, 2)
    assert centers.dtype == np.int64
    for axis in (0, 1):
        assert int(centers[:, axis].min()) == smallest
        assert int(centers[:, axis].max()) == largest
    # every centre of [smallest, largest] is drawn, nothing outside
    assert set(np.unique(centers).tolist()) == set(range(smallest, largest + 1))
    overlap_targets(centers, n, r)  # all valid


def test_sample_random_centers_reproducible():
    first = sample_random_centers(np.random.default_rng(1), 50, 3, 4)
    np.testing.assert_array_equal(first, sample_random_centers(np.random.default_rng(1), 50, 3, 4))


def test_sample_random_centers_needs_two_cells_per_side():
    assert sample_center_range(1, 4) == (2, 2)  # empty
    with pytest.raises(ValueError, match="at least 2x2"):
        sample_random_centers(np.random.default_rng(0), 1, 1, 4)


def test_sample_random_centers_validates():
    with pytest.raises(TypeError, match="Generator"):
        sample_random_centers(np.random.RandomState(0), 2, 3, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be"):
        sample_random_centers(np.random.default_rng(0), -1, 3, 4)
    assert sample_random_centers(np.random.default_rng(0), 0, 3, 4).shape == (0, 2)
