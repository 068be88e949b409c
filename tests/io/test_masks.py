"""Tests for ctvoco.io.masks: RSNA organ masks read by their affine onto their DICOM series."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from ctvoco.errors import DataError
from ctvoco.io.dicom import read_dicom_series
from ctvoco.io.masks import MASK_LABELS, align_mask, read_mask
from ctvoco.io.nifti import write_nifti
from ctvoco.synth.dicom_writer import SeriesTags, write_dicom_series
from ctvoco.synth.placement import stored_origin
from tests.conftest import small_phantom
from tests.io.test_nifti import STORAGE_CASES

SHAPE = (10, 40, 44)
SPACING = (5.0, 0.9, 0.8)
CORNER = (-17.6, -18.0, 30.0)  # LPS mm of canonical voxel (0, 0, 0)


def organ_labels(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Canonical labels: each organ a box at its own place, none symmetric to another."""
    labels = np.zeros(shape, dtype=np.uint8)
    d, _, w = shape
    labels[1:4, 5:15, 3:20] = MASK_LABELS["liver"]  # cranial, patient's right
    labels[2:5, 8:16, 30:40] = MASK_LABELS["spleen"]  # cranial, patient's left
    labels[5:8, 25:32, 28:36] = MASK_LABELS["left_kidney"]
    labels[6:9, 24:30, 6:12] = MASK_LABELS["right_kidney"]
    labels[d - 2 :, 2:10, w // 2 - 4 : w // 2 + 5] = MASK_LABELS["bowel"]  # caudal, anterior
    return labels


def write_mask(path, labels, directions, spacing=SPACING, corner=CORNER):
    return write_nifti(
        labels,
        path,
        spacing,
        directions=directions,
        origin_lps=stored_origin(corner, labels.shape, spacing, np.asarray(directions)),
    )


@pytest.mark.parametrize(
    "directions", [c[1] for c in STORAGE_CASES], ids=[c[0] for c in STORAGE_CASES]
)
def test_any_storage_reads_back_canonical(tmp_path, directions):
    labels = organ_labels()
    path = write_mask(tmp_path / "123.nii", labels, directions)
    mask = read_mask(path)
    assert mask.labels.dtype == np.uint8
    np.testing.assert_array_equal(mask.labels, labels)
    assert mask.spacing == pytest.approx(SPACING)
    # slice 0 is the most cranial: patient z decreases from the corner on
    np.testing.assert_allclose(mask.positions, CORNER[2] - SPACING[0] * np.arange(SHAPE[0]))


def dicom_series(tmp_path, hu):
    tags = SeriesTags(patient_id="7", series_uid="1.2.3.4", study_uid="1.2.3")
    # write_dicom_series' origin is the LPS position of voxel (0, 0, 0) of slice 0
    write_dicom_series(hu, tmp_path / "7" / "321", SPACING, tags, origin=CORNER)
    return read_dicom_series(tmp_path / "7" / "321")


@pytest.mark.parametrize(
    "directions", [c[1] for c in STORAGE_CASES], ids=[c[0] for c in STORAGE_CASES]
)
def test_mask_lies_on_its_dicom_series(tmp_path, directions):
    """The mask of a series, stored along any axes, labels the same voxels as the series:
    its organs sit where the series is bright, whatever the slice order of the files."""
    labels = organ_labels()
    hu = small_phantom(SHAPE).astype(np.int16)
    hu[labels > 0] = 400 + 100 * labels[labels > 0].astype(np.int16)  # organs by their label
    volume = dicom_series(tmp_path, hu)
    aligned, warnings = align_mask(
        read_mask(write_mask(tmp_path / "321.nii", labels, directions)), volume
    )
    assert warnings == []
    for code in MASK_LABELS.values():
        assert np.all(volume.hu[aligned == code] == 400 + 100 * code)


def test_a_mask_read_without_its_affine_would_be_wrong(tmp_path):
    """The reference above is not trivial: the stored array of a flipped, transposed mask
    is not the canonical one, so a reader that ignored the affine would misplace organs."""
    labels = organ_labels()
    directions = STORAGE_CASES[0][1]  # the RAS+ storage of plain NIfTI
    stored = np.asarray(nib.load(write_mask(tmp_path / "1.nii", labels, directions)).dataobj)
    assert stored.shape != labels.shape


def test_slices_elsewhere_than_the_series_are_reported(tmp_path):
    labels = organ_labels()
    volume = dicom_series(tmp_path, small_phantom(SHAPE).astype(np.int16))
    moved = (CORNER[0], CORNER[1], CORNER[2] + 40.0)
    mask = read_mask(write_mask(tmp_path / "321.nii", labels, np.eye(3), corner=moved))
    aligned, warnings = align_mask(mask, volume)
    np.testing.assert_array_equal(aligned, labels)
    assert len(warnings) == 1
    assert "321.nii" in warnings[0] and "40.0 mm" in warnings[0]


def test_a_mask_of_another_series_is_refused(tmp_path):
    volume = dicom_series(tmp_path, small_phantom(SHAPE).astype(np.int16))
    other = organ_labels((SHAPE[0] + 2, SHAPE[1], SHAPE[2]))
    path = write_mask(tmp_path / "99.nii", other, np.eye(3))
    with pytest.raises(DataError, match=r"99\.nii.*12 x 40 x 44.*10 x 40 x 44.*another series"):
        align_mask(read_mask(path), volume)


def test_unknown_labels_name_the_file(tmp_path):
    labels = organ_labels()
    labels[0, 0, 0] = 9
    path = write_mask(tmp_path / "5.nii", labels, np.eye(3))
    with pytest.raises(DataError, match=r"5\.nii: unknown label\(s\) 9.*liver 1"):
        read_mask(path)


def test_fractional_labels_are_refused(tmp_path):
    values = organ_labels().astype(np.float32)
    values[3, 3, 3] = 1.5
    path = write_mask(tmp_path / "6.nii", values, np.eye(3))
    with pytest.raises(DataError, match=r"6\.nii: .*whole-number labels.*1\.5"):
        read_mask(path)


def test_float_stored_whole_labels_are_read(tmp_path):
    labels = organ_labels()
    path = write_mask(tmp_path / "8.nii.gz", labels.astype(np.float32), np.eye(3))
    np.testing.assert_array_equal(read_mask(path).labels, labels)


def test_broken_file_names_the_file(tmp_path):
    path = tmp_path / "4.nii"
    path.write_bytes(b"not a nifti file")
    with pytest.raises(DataError, match=r"4\.nii: not a readable NIfTI file"):
        read_mask(path)
