"""Tests for ctvoco.preprocessing.masks: a mask follows its series through preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.io.volume import CTVolume
from ctvoco.preprocessing.masks import nearest_indices, nearest_resize, preprocess_mask
from ctvoco.preprocessing.pipeline import PreprocessConfig, preprocess_volume


def test_nearest_indices_by_hand():
    # 4 -> 2: cells [0, 2) and [2, 4), centres 1 and 3
    assert nearest_indices(4, 2).tolist() == [1, 3]
    # 3 -> 6: centres 0.25, 0.75, 1.25, ... each input cell twice
    assert nearest_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    # 5 -> 3: centres 5/6, 15/6, 25/6
    assert nearest_indices(5, 3).tolist() == [0, 2, 4]
    assert nearest_indices(7, 7).tolist() == list(range(7))


def test_nearest_resize_keeps_only_input_labels():
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 3, 5], dtype=np.uint8), size=(9, 31, 27))
    out = nearest_resize(labels, (4, 16, 50))
    assert out.shape == (4, 16, 50) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1, 3, 5}


def body_with_organ(shape=(20, 64, 72)):
    """A bright box (the organ, label 2) inside a body ellipse in air, and its label map."""
    d, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    body = ((yy - h / 2) / (h * 0.35)) ** 2 + ((xx - w / 2) / (w * 0.3)) ** 2 <= 1
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[3 : d - 2, body] = 40
    labels = np.zeros(shape, dtype=np.uint8)
    labels[6:12, 24:36, 30:44] = 2
    hu[labels == 2] = 240  # near the top of the window: 0-255 value about 249
    return hu, labels


@pytest.mark.parametrize("target_spacing", [None, (3.0, 1.5, 1.5)])
def test_cached_mask_lies_on_the_cached_image(target_spacing):
    """After the body crop and the resize (or resampling and fitting), the organ's label
    covers the organ's bright voxels of the cached array, and only those."""
    hu, labels = body_with_organ()
    spacing = (2.5, 0.9, 0.9)
    config = PreprocessConfig(shape=(8, 32, 32), target_spacing=target_spacing)
    result = preprocess_volume(CTVolume(hu=hu, spacing=spacing), config)
    assert result.crop_box.z0 > 0 and result.crop_box.y0 > 0  # the crop does something
    cached = preprocess_mask(labels, result.crop_box, spacing, config.shape, target_spacing)
    assert cached.shape == config.shape and cached.dtype == np.uint8
    organ = cached == 2
    assert organ.any()
    # the label's voxels are bright; the voxels clearly inside the organ are labelled
    assert result.array[organ].min() > 125  # plain body is 121
    assert np.all(organ[result.array > 245])


def test_without_body_crop_a_full_box_is_a_plain_resize():
    _, labels = body_with_organ()
    from ctvoco.preprocessing.body_crop import CropBox

    out = preprocess_mask(labels, CropBox.full(labels.shape), (1.0, 1.0, 1.0), (10, 32, 36))
    np.testing.assert_array_equal(out, labels[1::2, 1::2, 1::2])
