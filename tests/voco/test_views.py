"""Tests for ctvoco.voco.views: the VoCo sample of one cached volume (docs/algorithms.md §2.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctvoco.voco.targets import overlap_targets, sample_center_range
from ctvoco.voco.views import VoCoViews, foreground_box

N, R, K, S, Z = 3, 16, 4, 3, 6


def structured_volume(shape: tuple[int, int, int] = (10, 56, 60), seed: int = 0) -> np.ndarray:
    """uint8 volume with a foreground body, an off-centre bright organ and noise."""
    d, h, w = shape
    rng = np.random.default_rng(seed)
    vol = rng.integers(0, 20, size=shape).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    body = ((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.45 * w)) ** 2 <= 1
    vol[:, body] += 80
    vol[: d // 2, 10:25, 8:20] = 220
    return vol


def make_views(**kwargs) -> VoCoViews:
    params = {"grid": N, "crop_size": R, "num_random": K, "num_slices": S, "depth": Z}
    params.update(kwargs)
    return VoCoViews(**params)


def sample(views: VoCoViews, volume: np.ndarray, seed: int = 0) -> dict:
    return views(volume, np.random.default_rng(seed))


def assert_samples_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- shapes
def test_output_shapes_and_dtypes():
    out = sample(make_views(), structured_volume())
    assert out["random"].shape == (K, S, 1, R, R)
    assert out["random"].dtype == torch.uint8
    assert out["base"].shape == (N * N, S, 1, R, R)
    assert out["base"].dtype == torch.uint8
    assert out["targets"].shape == (K, N * N)
    assert out["targets"].dtype == torch.float32
    torch.testing.assert_close(out["targets"].sum(dim=1), torch.ones(K))
    assert out["centers"].shape == (K, 2)
    assert out["centers"].dtype == torch.int64
    lo, hi = sample_center_range(N, R)
    assert bool(((out["centers"] >= lo) & (out["centers"] < hi)).all())


def test_canvas_shape_and_dtype():
    views = make_views()
    canvas = views.canvas(structured_volume())
    assert views.canvas_size == N * R
    assert canvas.shape == (S, N * R, N * R)
    assert canvas.dtype == np.uint8


# ------------------------------------------------------------------ crops vs canvas
def test_base_crop_j_is_canvas_cell_row_major():
    views = make_views()
    volume = structured_volume()
    canvas = torch.from_numpy(views.canvas(volume))
    base = sample(views, volume)["base"]
    for j in range(N * N):
        row, col = j // N, j % N
        cell = canvas[:, row * R : (row + 1) * R, col * R : (col + 1) * R]
        assert torch.equal(base[j, :, 0], cell), f"base crop {j} is not cell ({row}, {col})"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_crop_is_canvas_window_at_its_centre(seed):
    views = make_views()
    volume = structured_volume()
    canvas = torch.from_numpy(views.canvas(volume))
    out = sample(views, volume, seed)
    for k, (cy, cx) in enumerate(out["centers"].tolist()):
        y0, x0 = cy - R // 2, cx - R // 2
        assert torch.equal(out["random"][k, :, 0], canvas[:, y0 : y0 + R, x0 : x0 + R])


@pytest.mark.parametrize("seed", [0, 5])
def test_targets_are_overlap_targets_of_the_centres(seed):
    out = sample(make_views(), structured_volume(), seed)
    torch.testing.assert_close(out["targets"], overlap_targets(out["centers"], N, R))


def test_slices_are_spread_over_depth_by_linspace():
    # Canvas depth equals the volume depth and the in-plane size is already n*r, so canvas
    # slice c is source slice c; the S used slices are floor(linspace(0, Z-1, S)).
    depth, num_slices = 8, 4
    z = np.arange(depth, dtype=np.uint8)
    volume = np.broadcast_to((10 + 20 * z)[:, None, None], (depth, N * R, N * R)).copy()
    views = make_views(depth=depth, num_slices=num_slices)
    canvas = views.canvas(volume)
    used = np.floor(np.linspace(0, depth - 1, num_slices)).astype(int)
    for s, c in enumerate(used):
        assert np.all(canvas[s] == 10 + 20 * c)


def test_base_crops_encode_grid_position():
    # Intensity encodes the grid cell: 20 + 10*row_cell + 100*col_cell, constant within a cell.
    size = N * R
    rows, cols = np.mgrid[0:size, 0:size] // R
    plane = (20 + 10 * rows + 100 * cols).astype(np.uint8)
    volume = np.broadcast_to(plane, (Z, size, size)).copy()
    out = sample(make_views(), volume)
    base = out["base"].int()
    values = []
    for j in range(N * N):
        expected = 20 + 10 * (j // N) + 100 * (j % N)
        assert torch.all(base[j] == expected), f"base crop {j}"
        values.append(expected)
    assert len(set(values)) == N * N
    # A random crop holds each cell's value on exactly the overlap fraction of its area.
    for k in range(K):
        crop = out["random"][k, 0, 0].int()
        for j, value in enumerate(values):
            fraction = (crop == value).float().mean()
            torch.testing.assert_close(fraction, out["targets"][k, j])


# ------------------------------------------------------------------- reproducibility
def test_same_seed_same_sample():
    views, volume = make_views(noise_std=3.0, contrast_jitter=0.2), structured_volume()
    assert_samples_equal(sample(views, volume, 11), sample(views, volume, 11))


def test_other_seed_other_random_crops():
    views, volume = make_views(), structured_volume()
    first = sample(views, volume, 0)
    others = [sample(views, volume, seed) for seed in (1, 2, 3)]
    assert any(not torch.equal(first["centers"], o["centers"]) for o in others)
    assert any(not torch.equal(first["random"], o["random"]) for o in others)
    for o in others:  # the base grid does not depend on the draw
        assert torch.equal(first["base"], o["base"])


# ------------------------------------------------------------------ input layouts
def test_memory_mapped_volume(tmp_path: Path):
    volume = structured_volume()
    path = tmp_path / "volume.npy"
    np.save(path, volume)
    mapped = np.load(path, mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    views = make_views()
    assert_samples_equal(sample(views, mapped, 4), sample(views, volume, 4))


@pytest.mark.parametrize("channel", [0, 1])
def test_multichannel_volume_selects_channel(tmp_path: Path, channel):
    channels = np.stack([structured_volume(seed=0), structured_volume(seed=1)[:, ::-1]])
    assert channels.shape[0] == 2
    views = make_views(channel=channel)
    expected = sample(make_views(), np.ascontiguousarray(channels[channel]), 3)
    assert_samples_equal(sample(views, channels, 3), expected)
    path = tmp_path / "multi.npy"
    np.save(path, channels)
    assert_samples_equal(sample(views, np.load(path, mmap_mode="r"), 3), expected)


def test_bad_volume_rank_raises():
    with pytest.raises(ValueError, match="volume"):
        make_views().canvas(np.zeros((32, 32), dtype=np.uint8))


# ------------------------------------------------------------------ foreground crop
@pytest.mark.parametrize(
    "block",
    [
        (slice(0, 4), slice(0, 12), slice(0, 12)),  # first slices, top-left corner
        (slice(3, 8), slice(20, 32), slice(24, 40)),  # last slices, bottom-right corner
    ],
)
def test_foreground_block_fills_the_canvas(block):
    volume = np.zeros((8, 32, 40), dtype=np.uint8)
    volume[block] = 200
    views = make_views()
    canvas = views.canvas(volume)
    assert np.all(canvas == 200)
    out = sample(views, volume)
    assert torch.all(out["base"] == 200)
    assert torch.all(out["random"] == 200)


def test_foreground_box_of_aligned_block():
    volume = np.zeros((8, 32, 40), dtype=np.uint8)
    volume[2:6, 8:20, 4:16] = 50
    assert foreground_box(volume) == (2, 6, 8, 20, 4, 16)
    assert foreground_box(volume, threshold=50) == (0, 8, 0, 32, 0, 40)  # nothing above 50


def test_foreground_box_of_empty_volume_is_whole_volume():
    assert foreground_box(np.zeros((5, 12, 16), dtype=np.uint8)) == (0, 5, 0, 12, 0, 16)


def test_foreground_threshold_excludes_dim_voxels():
    volume = np.full((6, 32, 32), 10, dtype=np.uint8)
    volume[:, 16:32, 16:32] = 150
    canvas = make_views(foreground_threshold=20).canvas(volume)
    assert np.all(canvas == 150)
    assert make_views().canvas(volume).min() == 10  # threshold 0: the dim voxels stay


def test_foreground_box_of_unaligned_block_is_tight():
    volume = np.zeros((4, 32, 32), dtype=np.uint8)
    volume[:, 5:13, 6:14] = 200  # not aligned to any block size
    assert foreground_box(volume) == (0, 4, 5, 13, 6, 14)


def brute_force_box(volume: np.ndarray, threshold: int = 0) -> tuple[int, ...]:
    z, y, x = np.nonzero(volume > threshold)
    if z.size == 0:
        return (0, volume.shape[0], 0, volume.shape[1], 0, volume.shape[2])
    return (z.min(), z.max() + 1, y.min(), y.max() + 1, x.min(), x.max() + 1)


@pytest.mark.parametrize(
    "voxel",
    [(0, 0, 0), (1, 5, 7), (3, 1, 30), (2, 33, 1), (4, 34, 31), (0, 2, 3), (4, 35, 39)],
)
def test_foreground_box_of_a_single_off_grid_voxel(voxel):
    volume = np.zeros((5, 36, 40), dtype=np.uint8)
    volume[voxel] = 1
    z, y, x = voxel
    assert foreground_box(volume) == (z, z + 1, y, y + 1, x, x + 1)


def test_foreground_box_of_two_voxels_spans_both():
    volume = np.zeros((5, 36, 40), dtype=np.uint8)
    volume[1, 3, 37] = 90
    volume[3, 29, 2] = 90
    assert foreground_box(volume) == (1, 4, 3, 30, 2, 38)
    assert foreground_box(volume, threshold=89) == (1, 4, 3, 30, 2, 38)
    assert foreground_box(volume, threshold=90) == (0, 5, 0, 36, 0, 40)  # strictly above


@pytest.mark.parametrize("corner", [(2, 9, 13), (0, 0, 38), (4, 34, 0), (1, 17, 22)])
def test_foreground_box_of_a_2x2_blob(corner):
    volume = np.full((5, 36, 40), 3, dtype=np.uint8)  # dim background below the threshold
    z, y, x = corner
    volume[z, y : y + 2, x : x + 2] = 250
    assert foreground_box(volume, threshold=10) == (z, z + 1, y, y + 2, x, x + 2)


@pytest.mark.parametrize("seed", range(4))
def test_foreground_box_matches_brute_force_on_sparse_volumes(seed):
    rng = np.random.default_rng(seed)
    volume = np.zeros((7, 37, 41), dtype=np.uint8)
    for _ in range(1 + seed):
        volume[tuple(rng.integers(0, s) for s in volume.shape)] = rng.integers(1, 255)
    assert foreground_box(volume) == brute_force_box(volume)
    assert foreground_box(volume.astype(np.int16)) == brute_force_box(volume)  # any dtype


def test_foreground_box_of_a_memory_mapped_volume(tmp_path: Path):
    volume = np.zeros((6, 30, 34), dtype=np.uint8)
    volume[2, 11, 29] = 7
    volume[4, 13, 3] = 7
    path = tmp_path / "sparse.npy"
    np.save(path, volume)
    assert foreground_box(np.load(path, mmap_mode="r")) == (2, 5, 11, 14, 3, 30)


def test_foreground_box_at_cache_size():
    # A cache-sized (96, 256, 256) volume: a body ellipse on slices 5..89 plus one stray
    # voxel outside it; the box is exact (the reduction takes well under a millisecond).
    volume = np.zeros((96, 256, 256), dtype=np.uint8)
    yy, xx = np.mgrid[0:256, 0:256]
    volume[5:90, ((yy - 128) / 100) ** 2 + ((xx - 128) / 110) ** 2 <= 1] = 120
    volume[93, 250, 3] = 1
    assert foreground_box(volume) == (5, 94, 28, 251, 3, 239)
    assert foreground_box(volume) == brute_force_box(volume)


def test_canvas_of_a_small_blob_is_the_blob():
    volume = np.zeros((6, 40, 44), dtype=np.uint8)
    volume[:, 13:15, 21:23] = 180  # a 2x2 in-plane blob through all slices
    assert np.all(make_views().canvas(volume) == 180)


# ------------------------------------------------------------------ augmentation
AUGMENT = {"contrast_jitter": 0.3, "brightness_jitter": 0.2, "noise_std": 8.0}


@pytest.mark.parametrize("seed", [0, 7])
def test_augmentation_touches_random_crops_only(seed):
    volume = structured_volume()
    plain = sample(make_views(), volume, seed)
    augmented = sample(make_views(**AUGMENT), volume, seed)
    assert torch.equal(augmented["base"], plain["base"])
    assert torch.equal(augmented["centers"], plain["centers"])
    assert torch.equal(augmented["targets"], plain["targets"])
    assert augmented["random"].dtype == torch.uint8
    assert augmented["random"].shape == plain["random"].shape
    assert not torch.equal(augmented["random"], plain["random"])


@pytest.mark.parametrize("key", sorted(AUGMENT))
def test_each_augmentation_alone_changes_random_crops(key):
    volume = structured_volume()
    plain = sample(make_views(), volume, 2)
    augmented = sample(make_views(**{key: AUGMENT[key]}), volume, 2)
    assert torch.equal(augmented["base"], plain["base"])
    assert not torch.equal(augmented["random"], plain["random"])


def test_augmentation_saturates_instead_of_wrapping():
    # A constant bright volume: contrast has no effect, brightness U(-0.5, 0.5)*255 is added
    # and must clamp at 255 (uint8 wrap-around would give small values).
    volume = np.full((6, 48, 48), 250, dtype=np.uint8)
    views = make_views(brightness_jitter=0.5)
    lowest = 250 - 0.5 * 255 - 1
    saturated = 0
    for seed in range(6):
        crops = sample(views, volume, seed)["random"]
        assert crops.dtype == torch.uint8
        assert int(crops.min()) >= lowest
        for crop in crops:
            assert int(crop.min()) == int(crop.max())  # one brightness draw per crop
        saturated += int((crops == 255).any())
    assert saturated > 0


# ------------------------------------------------------------------ bad parameters
@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_slices": 7, "depth": 6},
        {"grid": 0},
        {"grid": 1},  # no random-crop centre in [r/2, r - r/2)
        {"crop_size": 0},
        {"num_random": 0},
        {"num_slices": 0},
        {"depth": 0},
    ],
)
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        make_views(**kwargs)


def test_num_slices_above_depth_names_both():
    with pytest.raises(ValueError, match=r"num_slices \(9\).*depth \(4\)"):
        VoCoViews(num_slices=9, depth=4)
