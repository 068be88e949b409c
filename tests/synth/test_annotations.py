"""The synthetic cohort's organ masks: RSNA's format and codes, exact, on their series."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ctvoco.io import read_dicom_series
from ctvoco.io.masks import MASK_LABELS, align_mask, read_mask
from ctvoco.synth.annotations import MASK_STORAGE, rsna_mask, segmented
from ctvoco.synth.cohort import make_synthetic_cohort
from ctvoco.synth.tissues import ORGAN_CODES
from tests.synth.test_cohort import make_recording_phantoms

SPEC = {
    "n_patients": 4,
    "n_test": 1,
    "n_flare": 0,
    "seed": 3,
    "shape": (12, 48, 48),
    "second_series_fraction": 0.5,
    "segmented_fraction": 1.0,
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_recording_phantoms(tmp_path_factory.mktemp("seg"), SPEC)


def test_rsna_codes():
    organs = np.array(
        [ORGAN_CODES[n] for n in ("liver", "spleen", "kidney_left", "kidney_right", "bowel")]
        + [ORGAN_CODES["aorta"], ORGAN_CODES["bone"], ORGAN_CODES["outside"]],
        dtype=np.uint8,
    )
    assert rsna_mask(organs).tolist() == [1, 2, 3, 4, 5, 0, 0, 0]
    assert MASK_LABELS == {
        "liver": 1,
        "spleen": 2,
        "left_kidney": 3,
        "right_kidney": 4,
        "bowel": 5,
    }


def test_every_training_series_mask_is_exact_on_its_dicom_series(made):
    cohort, rendered = made
    meta = pd.concat(
        [pd.read_csv(cohort.rsna_root / f"{s}_series_meta.csv") for s in ("train", "test")]
    )
    assert len(meta) == len(rendered)
    split = dict(zip(cohort.labels["patient_id"], ["train"] * len(cohort.labels), strict=True))
    checked = 0
    for (patient, series), phantom in zip(
        meta[["patient_id", "series_id"]].to_numpy(), rendered, strict=True
    ):
        path = cohort.rsna_root / "segmentations" / f"{series}.nii"
        if split.get(patient) != "train":
            assert not path.exists(), "RSNA ships masks of training series only"
            continue
        volume = read_dicom_series(cohort.rsna_root / "train_images" / str(patient) / str(series))
        labels, warnings = align_mask(read_mask(path), volume)
        assert warnings == []
        np.testing.assert_array_equal(labels, rsna_mask(phantom.organs))
        checked += 1
    assert checked == len(meta) - 1


def test_masks_are_stored_in_several_ways(made):
    cohort, _ = made
    codes = {
        nib.aff2axcodes(nib.load(p).affine)
        for p in (cohort.rsna_root / "segmentations").glob("*.nii")
    }
    assert len(codes) >= 2
    assert codes <= {tuple(name) for name, _ in MASK_STORAGE}


def test_masks_label_the_organs_where_anatomy_puts_them(made):
    cohort, _ = made
    for path in sorted((cohort.rsna_root / "segmentations").glob("*.nii")):
        labels = read_mask(path).labels
        column = {
            name: np.argwhere(labels == code)[:, 2].mean()
            for name, code in MASK_LABELS.items()
            if (labels == code).any()
        }
        # canonical column 0 is the patient's right: liver and right kidney lie there
        assert column["liver"] < column["spleen"], path.name
        if "left_kidney" in column and "right_kidney" in column:
            assert column["right_kidney"] < column["left_kidney"], path.name


def test_the_share_of_segmented_series_is_a_parameter(made):
    draws = [segmented(0, 10000 + i, 2000 + i, 0.25) for i in range(400)]
    share = np.mean([d is not None for d in draws])
    assert 0.18 < share < 0.32
    assert {d for d in draws if d is not None} == set(range(len(MASK_STORAGE)))
    assert all(segmented(0, 1, 2, 0.0) is None for _ in range(3))


def tree_digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_choosing_segmented_series_changes_no_other_file(made, tmp_path):
    cohort, _ = made
    without = make_synthetic_cohort(
        tmp_path / "none", progress=False, **{**SPEC, "segmented_fraction": 0.0}
    )
    assert not (without.rsna_root / "segmentations").exists()
    for part in ("train_images", "test_images"):
        assert tree_digest(without.rsna_root / part) == tree_digest(cohort.rsna_root / part)
    for name in ("train.csv", "train_series_meta.csv", "image_level_labels.csv"):
        assert (without.rsna_root / name).read_bytes() == (cohort.rsna_root / name).read_bytes()
