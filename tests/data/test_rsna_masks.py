"""RSNA's segmentations/ folder: each series finds its organ mask."""

from __future__ import annotations

import logging
from pathlib import Path

from ctvoco.data.rsna import rsna_series


def tree(root: Path, series: dict[int, list[int]], masks: list[str]) -> Path:
    for patient, ids in series.items():
        for sid in ids:
            (root / "train_images" / str(patient) / str(sid)).mkdir(parents=True)
    (root / "segmentations").mkdir()
    for name in masks:
        (root / "segmentations" / name).write_bytes(b"")
    return root


def test_series_get_their_masks(tmp_path: Path) -> None:
    root = tree(tmp_path, {10: [100, 101], 11: [110]}, ["100.nii", "110.nii.gz", "notes.txt"])
    masks = {s.key: s.mask for s in rsna_series(root)}
    assert masks == {
        "10_100": str(root / "segmentations" / "100.nii"),
        "10_101": "",
        "11_110": str(root / "segmentations" / "110.nii.gz"),
    }


def test_no_segmentations_folder_means_no_masks(tmp_path: Path) -> None:
    (tmp_path / "train_images" / "1" / "2").mkdir(parents=True)
    assert [s.mask for s in rsna_series(tmp_path)] == [""]


def test_masks_of_missing_series_are_reported(tmp_path: Path, caplog) -> None:
    root = tree(tmp_path, {10: [100]}, ["100.nii", "999.nii"])
    with caplog.at_level(logging.WARNING, logger="ctvoco.data.rsna"):
        rsna_series(root)
    assert "1 segmentation(s) of series not found in the images: 999.nii" in caplog.text


def test_the_synthetic_cohort_masks_some_training_series(tiny_cohort) -> None:
    sources = rsna_series(tiny_cohort.rsna_root)
    masked = [s for s in sources if s.mask]
    files = sorted((tiny_cohort.rsna_root / "segmentations").glob("*.nii"))
    assert 0 < len(masked) < len(sources)
    assert sorted(Path(s.mask) for s in masked) == files
    assert all(Path(s.mask).stem == s.series_id for s in masked)
    assert all(not s.mask for s in rsna_series(tiny_cohort.rsna_root, "test"))
