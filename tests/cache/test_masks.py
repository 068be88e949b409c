"""Organ masks in the volume cache: cached beside their series, resumable, never fatal."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from rich.console import Console

from ctvoco.cache import VolumeCache, build_cache
from ctvoco.io import write_nifti
from ctvoco.io.series import SeriesSource
from ctvoco.preprocessing import PreprocessConfig
from tests.conftest import body_phantom

CONFIG = PreprocessConfig(shape=(6, 24, 24))
SPACING = (5.0, 4.0, 4.0)
SHAPE = (12, 48, 56)
ORGAN = (slice(2, 8), slice(14, 26), slice(8, 22))
"""The patient's right side of the body, where :func:`body_phantom` puts its bright marker."""


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def write_series(root, n: int, *, masks: bool = True) -> list[SeriesSource]:
    """NIfTI series and, with ``masks``, an organ mask (liver, label 1) for each."""
    sources = []
    for i in range(n):
        hu = body_phantom(SHAPE, seed=i)
        hu[ORGAN] = 230
        volume = write_nifti(hu, root / f"CASE_{i:04d}_0000.nii.gz", SPACING)
        labels = np.zeros(SHAPE, dtype=np.uint8)
        labels[ORGAN] = 1
        mask = write_nifti(labels, root / "segmentations" / f"{i}.nii", SPACING) if masks else ""
        sources.append(SeriesSource(f"CASE_{i:04d}", str(volume), f"{i}", f"{i}", mask=str(mask)))
    return sources


def test_masks_are_cached_on_the_voxels_of_their_series(tmp_path):
    sources = write_series(tmp_path, 2)
    cache = VolumeCache(tmp_path / "cache")
    console = quiet()
    summary = build_cache(sources, cache, CONFIG, console=console)
    assert summary.masks == 2 and summary.mask_failures == []
    assert "organ masks: 2 cached" in console.file.getvalue()
    assert cache.mask_keys() == ["CASE_0000", "CASE_0001"]
    for source in sources:
        mask, image = cache.load_mask(source.key), cache.load(source.key)
        assert mask.shape == image.shape == CONFIG.shape and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1}
        assert image[mask == 1].min() > 150  # brighter than the body (121): on the organ
        assert cache.has_mask(source.key)
    manifest = cache.manifest()
    assert manifest["mask"].tolist() == ["ok", "ok"]


def test_series_without_a_mask_say_so(tmp_path):
    sources = write_series(tmp_path, 1, masks=False)
    cache = VolumeCache(tmp_path / "cache")
    summary = build_cache(sources, cache, CONFIG, console=quiet())
    assert summary.masks == 0
    assert cache.manifest()["mask"].tolist() == [""]
    assert not cache.has_mask("CASE_0000") and cache.mask_keys() == []


def test_a_segmentation_added_later_is_cached_on_the_next_run(tmp_path):
    with_masks = write_series(tmp_path, 2)
    cache = VolumeCache(tmp_path / "cache")
    without = [dataclasses.replace(s, mask="") for s in with_masks]
    assert build_cache(without, cache, CONFIG, console=quiet()).processed == 2
    assert not cache.masks_dir.exists()
    again = build_cache(with_masks, cache, CONFIG, console=quiet())
    assert again.processed == 2 and again.masks == 2
    assert build_cache(with_masks, cache, CONFIG, console=quiet()).skipped == 2


def test_a_lost_mask_file_is_made_again(tmp_path):
    sources = write_series(tmp_path, 2)
    cache = VolumeCache(tmp_path / "cache")
    build_cache(sources, cache, CONFIG, console=quiet())
    cache.mask_path("CASE_0001").unlink()
    summary = build_cache(sources, cache, CONFIG, console=quiet())
    assert (summary.skipped, summary.processed) == (1, 1)
    assert cache.has_mask("CASE_0001")


def test_an_unusable_mask_leaves_its_series_usable(tmp_path):
    sources = write_series(tmp_path, 2)
    wrong = np.zeros((SHAPE[0] - 3, *SHAPE[1:]), dtype=np.uint8)
    write_nifti(wrong, tmp_path / "segmentations" / "1.nii", SPACING)
    cache = VolumeCache(tmp_path / "cache")
    console = quiet()
    summary = build_cache(sources, cache, CONFIG, console=console)
    assert summary.failed == [] and summary.masks == 1
    assert [r["key"] for r in summary.mask_failures] == ["CASE_0001"]
    record = cache.record("CASE_0001")
    assert record["status"] == "ok" and record["mask"] == "failed"
    assert "segmentation not used" in record["warnings"] and "1.nii" in record["warnings"]
    assert cache.has("CASE_0001") and not cache.has_mask("CASE_0001")
    out = console.file.getvalue()
    assert "1 not usable" in out and "CASE_0001: segmentation not used" in out
    # a failed mask is not retried while its file is unchanged
    assert build_cache(sources, cache, CONFIG, console=quiet()).skipped == 2


def test_a_manifest_written_before_masks_is_rebuilt(tmp_path):
    sources = write_series(tmp_path, 1)
    cache = VolumeCache(tmp_path / "cache")
    build_cache(sources, cache, CONFIG, console=quiet())
    old = cache.manifest().drop(columns=["mask"])
    cache.manifest_path.write_text(old.to_csv(index=False))
    assert cache.manifest()["mask"].tolist() == ["ok"]
