"""Mask prediction for a whole cache: complete, resumable, one model per folder."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.cache import VolumeCache
from ctvoco.errors import UserError
from ctvoco.segment.net import organ_unet
from ctvoco.segment.predict import predict_cache, predict_series, predicted_mask_path
from tests.conftest import SEG_CACHE_SHAPE

SMALL = (16, 16, 8, 8, 8)
MODEL = {"checkpoint": "a.ckpt", "sha256": "1"}


@pytest.fixture(scope="module")
def net():
    return organ_unet("test_efficientnet", 6, in_chans=3, decoder_channels=SMALL).eval()


def test_series_prediction_is_slice_by_slice(net, masked_cache):
    cache = VolumeCache(masked_cache)
    volume = cache.load(cache.ready_keys()[0])
    labels = predict_series(net, volume, context=1, batch_size=5)
    assert labels.shape == SEG_CACHE_SHAPE and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, predict_series(net, volume, context=1, batch_size=64))


def test_every_series_once_and_a_rerun_resumes(net, masked_cache, tmp_path):
    cache_dir = tmp_path / "cache"
    import shutil

    shutil.copytree(masked_cache, cache_dir)
    cache = VolumeCache(cache_dir)
    keys = cache.ready_keys()
    seen = []
    done = predict_cache(net, cache_dir, MODEL, context=1, keys=keys[:2], advance=seen.append)
    assert done == keys[:2] == seen
    first = predicted_mask_path(cache, keys[0]).read_bytes()
    # a run killed after two series: the next one predicts only the rest
    done = predict_cache(net, cache_dir, MODEL, context=1)
    assert done == keys[2:]
    assert predicted_mask_path(cache, keys[0]).read_bytes() == first
    assert all(predicted_mask_path(cache, k).exists() for k in keys)
    assert not list((cache_dir / "predicted_masks").glob("*.tmp*"))
    with pytest.raises(UserError, match=r"another model.*a\.ckpt.*restart=true"):
        predict_cache(net, cache_dir, {"checkpoint": "b.ckpt"}, context=1)
    done = predict_cache(net, cache_dir, {"checkpoint": "b.ckpt"}, context=1, restart=True)
    assert done == keys
