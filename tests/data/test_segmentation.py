"""Tests for ctvoco.data.segmentation and ctvoco.preprocessing.stacks: 2.5D samples, the
patient split."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.cache import VolumeCache
from ctvoco.data.segmentation import MaskedSlices, split_by_patient
from ctvoco.errors import ArgumentError, DataError
from ctvoco.preprocessing.stacks import slice_stack
from tests.conftest import SEG_CACHE_SHAPE


def test_slice_stack_by_hand():
    volume = np.arange(4, dtype=np.uint8).reshape(4, 1, 1) * np.ones((1, 2, 3), dtype=np.uint8)
    stack = slice_stack(volume, 0, 1)
    assert stack.shape == (3, 2, 3) and stack.dtype == np.float32
    assert (stack[:, 0, 0] * 255).round().tolist() == [0, 0, 1]  # the edge repeats itself
    assert (slice_stack(volume, 3, 2)[:, 0, 0] * 255).round().tolist() == [1, 2, 3, 3, 3]
    two_windows = np.stack([volume, volume + 10])
    assert (slice_stack(two_windows, 1, 1)[:, 0, 0] * 255).round().tolist() == [0, 1, 2, 10, 11, 12]


def test_every_slice_of_every_series_is_a_sample(masked_cache):
    cache = VolumeCache(masked_cache)
    keys = cache.mask_keys()
    data = MaskedSlices(masked_cache, keys, context=2)
    assert len(data) == len(keys) * SEG_CACHE_SHAPE[0]
    item = data[SEG_CACHE_SHAPE[0] + 3]
    assert item["key"] == keys[1] and item["slice"] == 3
    assert item["image"].shape == (5, *SEG_CACHE_SHAPE[1:])
    np.testing.assert_array_equal(item["mask"].numpy(), cache.load_mask(keys[1])[3])
    np.testing.assert_allclose(
        item["image"][2].numpy() * 255, cache.load(keys[1])[3].astype(np.float32), atol=1e-3
    )


def test_series_without_a_mask_are_refused(masked_cache, tmp_path):
    with pytest.raises(DataError, match="no organ mask cached for 1_2"):
        MaskedSlices(masked_cache, ["1_2"])
    with pytest.raises(ArgumentError, match="context"):
        MaskedSlices(masked_cache, [], context=-1)


def test_split_keeps_patients_on_one_side(masked_cache):
    cache = VolumeCache(masked_cache)
    keys = cache.mask_keys()
    train, val = split_by_patient(masked_cache, keys, 0.25, seed=0)
    assert sorted(train + val) == sorted(keys)
    patient = {k: cache.record(k)["patient_id"] for k in keys}
    assert {patient[k] for k in train}.isdisjoint({patient[k] for k in val})
    assert len({patient[k] for k in val}) == 1  # a quarter of 4 patients
    assert split_by_patient(masked_cache, keys, 0.25, seed=0) == (train, val)
    assert split_by_patient(masked_cache, keys, 0.0, seed=0) == (sorted(keys), [])
