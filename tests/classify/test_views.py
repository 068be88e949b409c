"""Tests of :class:`ctvoco.classify.views.SliceStackViews` (docs/algorithms.md §3.1, §3.4)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ctvoco.classify.views import SliceStackViews

ALL_AUGMENTATIONS = {
    "flip_prob": 0.5,
    "rot90_prob": 0.5,
    "rotate_prob": 0.5,
    "rotate_degrees": 15.0,
    "histogram_shift_prob": 0.5,
    "contrast_prob": 0.5,
    "dropout_prob": 0.5,
}


def _volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _indexed_volume(depth: int, height: int, width: int) -> np.ndarray:
    """Each voxel holds its slice index, so taken slices can be read back from the output."""
    return np.broadcast_to(
        np.arange(depth, dtype=np.uint8)[:, None, None], (depth, height, width)
    ).copy()


# --------------------------------------------------------------------------- slice choice
SLICE_CASES = [
    # (depth, num_slices, expected indices) = floor(linspace(0, depth - 1, num_slices))
    (96, 48, np.floor(np.linspace(0, 95, 48)).astype(int)),
    (10, 4, [0, 3, 6, 9]),  # linspace(0, 9, 4) = 0, 3, 6, 9
    (8, 3, [0, 3, 7]),  # linspace(0, 7, 3) = 0, 3.5, 7
    (5, 8, [0, 0, 1, 1, 2, 2, 3, 4]),  # more slices than the depth: repeats
    (1, 3, [0, 0, 0]),
]


@pytest.mark.parametrize(("depth", "num_slices", "expected"), SLICE_CASES)
def test_slice_indices_are_floored_linspace(depth, num_slices, expected):
    views = SliceStackViews.plain(num_slices=num_slices, crop=4)
    np.testing.assert_array_equal(views.slice_indices(depth), expected)


def test_call_takes_the_slices_of_slice_indices():
    views = SliceStackViews.plain(num_slices=5, crop=6)
    out = views(_indexed_volume(17, 6, 6), np.random.default_rng(0))["image"]
    taken = out[:, 0, 0, 0].numpy()
    np.testing.assert_array_equal(taken, views.slice_indices(17))
    np.testing.assert_array_equal(taken, [0, 4, 8, 12, 16])


# --------------------------------------------------------------------------- crops
def test_centre_crop_is_deterministic_and_centred():
    vol = _volume((6, 20, 30))
    views = SliceStackViews.plain(num_slices=3, crop=8)
    a = views(vol, np.random.default_rng(0))["image"]
    b = views(vol, np.random.default_rng(123))["image"]
    assert torch.equal(a, b)
    # dy = 12, dx = 22 -> origin (6, 11)
    assert views.crop_origin(20, 30, np.random.default_rng(0)) == (6, 11)
    idx = views.slice_indices(6)
    expected = torch.from_numpy(vol[idx, 6:14, 11:19]).unsqueeze(1)
    assert torch.equal(a, expected)


def test_random_crop_within_bounds_and_seeded():
    vol = _volume((4, 20, 26))
    views = SliceStackViews.plain(num_slices=2, crop=8, random_crop=True)
    origins = {views.crop_origin(20, 26, np.random.default_rng(s)) for s in range(200)}
    assert all(0 <= y <= 12 and 0 <= x <= 18 for y, x in origins)
    assert len(origins) > 20, "random crops should move"
    # both extremes are reachable (integers(0, d + 1) includes d)
    ys = {y for y, _ in origins}
    assert {0, 12} <= ys
    for seed in (0, 5):
        a = views(vol, np.random.default_rng(seed))["image"]
        b = views(vol, np.random.default_rng(seed))["image"]
        assert torch.equal(a, b)
        y, x = views.crop_origin(20, 26, np.random.default_rng(seed))
        idx = views.slice_indices(4)
        assert torch.equal(a, torch.from_numpy(vol[idx, y : y + 8, x : x + 8]).unsqueeze(1))
    c = views(vol, np.random.default_rng(0))["image"]
    d = views(vol, np.random.default_rng(1))["image"]
    assert not torch.equal(c, d)


@pytest.mark.parametrize("random_crop", [False, True])
def test_volume_smaller_than_crop_is_zero_padded_centred(random_crop):
    vol = _volume((3, 4, 6)) | 1  # no zeros inside the volume
    views = SliceStackViews.plain(num_slices=3, crop=8, random_crop=random_crop)
    out = views(vol, np.random.default_rng(0))["image"]
    assert out.shape == (3, 1, 8, 8)
    assert out.dtype == torch.uint8
    # pad h: 4 -> 8 (2 above, 2 below), w: 6 -> 8 (1 left, 1 right)
    assert torch.equal(out[:, 0, 2:6, 1:7], torch.from_numpy(vol))
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[2:6, 1:7] = False
    assert (out[:, 0][:, mask] == 0).all()


def test_padding_in_one_axis_and_crop_in_the_other():
    vol = _volume((2, 5, 12)) | 1
    views = SliceStackViews.plain(num_slices=2, crop=8)
    out = views(vol, np.random.default_rng(0))["image"]
    assert out.shape == (2, 1, 8, 8)
    # rows 5 -> 8 padded (1 above, 2 below); columns 12 -> 8 cropped at the centre (2..10)
    assert torch.equal(out[:, 0, 1:6, :], torch.from_numpy(vol[:, :, 2:10]))
    assert (out[:, 0, 0] == 0).all()
    assert (out[:, 0, 6:] == 0).all()


def test_channel_first_volume_gives_slices_by_channels():
    c, d, h, w = 2, 9, 12, 12
    vol = _volume((c, d, h, w))
    views = SliceStackViews.plain(num_slices=4, crop=10)
    out = views(vol, np.random.default_rng(0))["image"]
    assert out.shape == (4, 2, 10, 10)
    idx = views.slice_indices(d)
    for s, k in enumerate(idx):
        for ch in range(c):
            assert torch.equal(out[s, ch], torch.from_numpy(vol[ch, k, 1:11, 1:11]))


def test_single_channel_volume_gets_a_channel_axis():
    out = SliceStackViews.plain(num_slices=3, crop=5)(_volume((7, 5, 5)), np.random.default_rng(0))
    assert set(out) == {"image"}
    assert out["image"].shape == (3, 1, 5, 5)
    assert out["image"].is_contiguous()


def test_read_only_memory_mapped_like_input_works():
    vol = _volume((6, 10, 10))
    vol.setflags(write=False)
    views = SliceStackViews.plain(num_slices=3, crop=8, **ALL_AUGMENTATIONS)
    out = views(vol, np.random.default_rng(0))["image"]
    assert out.shape == (3, 1, 8, 8)


# --------------------------------------------------------------------------- augmentation
def test_no_augmentation_when_all_probabilities_are_zero():
    vol = _volume((8, 16, 16))
    plain = SliceStackViews.plain(num_slices=4, crop=12)
    assert not plain.augments
    out = plain(vol, np.random.default_rng(3))["image"]
    idx = plain.slice_indices(8)
    assert torch.equal(out, torch.from_numpy(vol[idx, 2:14, 2:14]).unsqueeze(1))
    # rotate_degrees alone switches nothing on
    assert not replace(plain, rotate_degrees=45.0).augments


@pytest.mark.parametrize("name", [k for k in ALL_AUGMENTATIONS if k.endswith("_prob")])
def test_each_probability_switches_augmentation_on(name):
    assert SliceStackViews.plain(**{name: 0.1}).augments


def test_augmentation_same_seed_same_output_and_uint8_shape():
    vol = _volume((10, 40, 40))
    views = SliceStackViews.plain(num_slices=5, crop=32, random_crop=True, **ALL_AUGMENTATIONS)
    a = views(vol, np.random.default_rng(11))["image"]
    b = views(vol, np.random.default_rng(11))["image"]
    assert a.dtype == torch.uint8
    assert a.shape == (5, 1, 32, 32)
    assert torch.equal(a, b)


def test_augmentation_different_seeds_differ():
    vol = _volume((10, 40, 40))
    views = SliceStackViews.plain(num_slices=5, crop=40, **ALL_AUGMENTATIONS)
    outputs = [views(vol, np.random.default_rng(s))["image"] for s in range(6)]
    distinct = {o.numpy().tobytes() for o in outputs}
    assert len(distinct) == len(outputs)


def test_augmentation_changes_the_image():
    vol = _volume((6, 24, 24))
    always = SliceStackViews.plain(num_slices=3, crop=24, flip_prob=1.0)
    out = always(vol, np.random.default_rng(0))["image"]
    raw = SliceStackViews.plain(num_slices=3, crop=24)(vol, np.random.default_rng(0))["image"]
    # both in-plane flips with probability 1: a 180 degree rotation of every slice
    assert torch.equal(out, raw.flip(-2, -1))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seed", range(8))
def test_augmentation_is_the_same_for_every_slice(seed, channels):
    """Identical slices stay identical: one geometric (and intensity) transform per stack."""
    rng = np.random.default_rng(100 + seed)
    plane = rng.integers(0, 256, size=(channels, 1, 36, 36), dtype=np.uint8)
    # a bright asymmetric marker makes every flip and rotation visible
    plane[:, :, 3:9, 5:20] = 255
    vol = np.repeat(plane, 7, axis=1)  # (C, D, H, W), every slice the same
    vol = vol[0] if channels == 1 else vol
    views = SliceStackViews.plain(
        num_slices=6,
        crop=32,
        random_crop=True,
        flip_prob=0.5,
        rot90_prob=0.7,
        rotate_prob=0.7,
        histogram_shift_prob=0.5,
        contrast_prob=0.5,
        dropout_prob=0.7,
    )
    out = views(vol, np.random.default_rng(seed))["image"]
    assert out.shape == (6, channels, 32, 32)
    for s in range(1, 6):
        assert torch.equal(out[s], out[0]), f"slice {s} was transformed differently"


def test_augmented_channels_share_the_geometric_transform():
    plane = np.zeros((1, 24, 24), dtype=np.uint8)
    plane[0, 2:6, 3:15] = 200
    vol = np.stack([plane, plane])  # (2, 1, 24, 24): two identical channels
    views = SliceStackViews.plain(num_slices=1, crop=24, flip_prob=0.5, rot90_prob=1.0)
    for seed in range(6):
        out = views(vol, np.random.default_rng(seed))["image"]
        assert torch.equal(out[0, 0], out[0, 1])
