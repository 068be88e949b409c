"""MONOCHROME1 CT: HU = RescaleSlope * stored + RescaleIntercept, nothing inverted.

PhotometricInterpretation says how to *display* values (MONOCHROME1: low values white); the
modality rescale gives Hounsfield units whatever it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctvoco.io.dicom import read_dicom_series
from ctvoco.synth.dicom_writer import SeriesTags, new_uid, write_dicom_series

SHAPE = (4, 16, 20)
SPACING = (2.0, 0.8, 0.8)


def known_stored(signed: bool, slope: float, intercept: float) -> np.ndarray:
    """12-bit stored values of a plausible CT (air, soft tissue, some bone), every slice different."""
    rng = np.random.default_rng(0)
    hu = np.where(rng.random(SHAPE) < 0.4, -1000, rng.integers(-100, 150, size=SHAPE))
    hu = np.where(rng.random(SHAPE) < 0.05, rng.integers(300, 900, size=SHAPE), hu)
    low, high = (-2048, 2047) if signed else (0, 4095)
    stored = np.clip(np.rint((hu - intercept) / slope), low, high)
    assert len(np.unique(stored)) > 100
    return stored.astype(np.int16 if signed else np.uint16)


def write_monochrome1(
    folder: Path, stored: np.ndarray, slope: float, intercept: float, *, compress: bool
) -> None:
    """A series whose files hold exactly ``stored``, tagged MONOCHROME1 with the rescale."""
    tags = SeriesTags(
        patient_id="p",
        series_uid=new_uid("mono1"),
        study_uid=new_uid("mono1-study"),
        rescale_slope=1.0,
        rescale_intercept=0.0,
    )
    placeholder = np.zeros(SHAPE, dtype=np.int16)
    paths = write_dicom_series(
        placeholder, folder, SPACING, tags, compress=False, signed=stored.dtype == np.int16
    )
    for i, path in enumerate(paths):  # slice order of the writer: paths[i] is slice i
        ds = pydicom.dcmread(path)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelData = np.ascontiguousarray(stored[i]).tobytes()
        if compress:
            ds.compress(pydicom.uid.RLELossless, generate_instance_uid=False)
        ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize(
    ("signed", "slope", "intercept", "compress"),
    [
        pytest.param(False, 1.0, -1024.0, False, id="unsigned_intercept"),
        pytest.param(False, 0.5, -1024.0, True, id="unsigned_slope_half_rle"),
        pytest.param(True, 1.0, 0.0, False, id="signed"),
        pytest.param(True, 2.0, -10.0, True, id="signed_slope_2_rle"),
    ],
)
def test_monochrome1_reads_as_slope_times_stored_plus_intercept(
    tmp_path, signed, slope, intercept, compress
):
    stored = known_stored(signed, slope, intercept)
    write_monochrome1(tmp_path / "s", stored, slope, intercept, compress=compress)
    volume = read_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(volume.hu, slope * stored.astype(np.float64) + intercept, atol=1e-3)


def test_writer_round_trips_monochrome1(tmp_path):
    """The writer stores HU the same way for both interpretations; only the tag differs."""
    hu = np.random.default_rng(1).integers(-1000, 300, size=SHAPE).astype(np.int16)
    tags = SeriesTags("p", new_uid("w1"), new_uid("w1-study"))
    paths = write_dicom_series(hu, tmp_path / "s", SPACING, tags, photometric="MONOCHROME1")
    ds = pydicom.dcmread(paths[0])
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(ds.pixel_array.astype(int), hu[0].astype(int) + 1024)
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "s").hu, hu)
