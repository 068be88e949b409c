"""Geometric pretext augmentation of VoCo views: the canvas is transformed before cropping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctvoco.voco.views import VoCoViews, transform_canvas

N, R, Z = 2, 8, 4
"""A 2x2 grid of 8-pixel cells: a 16x16 canvas, 256 pixels, each with its own value."""


def _volume() -> np.ndarray:
    """A volume the canvas reproduces exactly: every in-plane pixel has a distinct value."""
    plane = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return np.ascontiguousarray(np.broadcast_to(plane, (Z, 16, 16)))


def _views(**kwargs) -> VoCoViews:
    return VoCoViews(grid=N, crop_size=R, num_random=3, num_slices=Z, depth=Z, **kwargs)


def test_geometric_augmentation_is_off_by_default():
    views = VoCoViews()
    assert views.flip_prob == 0.0
    assert views.rot90_prob == 0.0
    plain = _views()(_volume(), np.random.default_rng(3))
    assert torch.equal(plain["base"][0, 0, 0], torch.from_numpy(_volume()[0, :R, :R]))


def test_presets_leave_geometric_augmentation_off():
    from hydra import compose, initialize_config_module

    with initialize_config_module("ctvoco.conf", version_base=None):
        for preset in ("voco", "voco_research"):
            views = compose(config_name="pretrain", overrides=[f"model={preset}"]).model.views
            assert views.flip_prob == 0.0
            assert views.rot90_prob == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_targets_stay_the_overlap_of_each_crop_with_each_base_cell(seed):
    sample = _views(flip_prob=0.5, rot90_prob=0.75)(_volume(), np.random.default_rng(seed))
    random, base, targets = sample["random"], sample["base"], sample["targets"]
    # the canvas the base grid was cut from; each random crop is its box on that canvas
    canvas = base[:, 0, 0].reshape(N, N, R, R).permute(0, 2, 1, 3).reshape(N * R, N * R)
    for k, (y, x) in enumerate((sample["centers"] - R // 2).tolist()):
        assert torch.equal(random[k, 0, 0], canvas[y : y + R, x : x + R])
    for k in range(random.shape[0]):
        crop = set(random[k, 0, 0].flatten().tolist())
        for j in range(base.shape[0]):
            cell = set(base[j, 0, 0].flatten().tolist())
            assert targets[k, j].item() == pytest.approx(len(crop & cell) / R**2)


def test_the_canvas_is_transformed_for_some_draws():
    untouched = torch.from_numpy(_volume()[0, :R, :R])
    firsts = [
        _views(flip_prob=0.5, rot90_prob=0.5)(_volume(), np.random.default_rng(s))["base"][0, 0, 0]
        for s in range(8)
    ]
    assert any(not torch.equal(f, untouched) for f in firsts)
    assert any(torch.equal(f, untouched) for f in firsts)


def test_a_flipped_and_rotated_canvas_moves_a_marker_where_expected():
    canvas = np.zeros((3, 6, 6), dtype=np.uint8)
    canvas[1, 1, 4] = 255  # slice 1, row 1, column 4
    assert np.argwhere(transform_canvas(canvas, (False, True), 0)).tolist() == [[1, 1, 1]]
    assert np.argwhere(transform_canvas(canvas, (True, False), 0)).tolist() == [[1, 4, 4]]
    # one quarter turn counter-clockwise: (row, col) -> (W - 1 - col, row)
    assert np.argwhere(transform_canvas(canvas, (False, False), 1)).tolist() == [[1, 1, 1]]
    assert np.argwhere(transform_canvas(canvas, (False, False), 2)).tolist() == [[1, 4, 1]]
    # flips first, then the rotation
    assert np.argwhere(transform_canvas(canvas, (True, True), 1)).tolist() == [[1, 4, 4]]


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="flip_prob"):
        VoCoViews(flip_prob=1.5)
