"""The tiny JPEG Lossless series under ``tests/io/data/jpeg_lossless_sv1`` and its HU.

The series is committed (no encoder for JPEG Lossless ships with pydicom); regenerate it with
``python -m tests.io.jpeg_lossless_fixture`` (needs python-gdcm, which transcodes the slices).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ctvoco.synth.dicom_writer import SeriesTags, new_uid, write_dicom_series

FOLDER = Path(__file__).resolve().parent / "data" / "jpeg_lossless_sv1"
SPACING = (2.0, 0.9, 0.8)  # (z, y, x) mm
ORIGIN = (-100.0, -90.0, 0.0)


def expected_hu() -> np.ndarray:
    """Canonical ``(3, 16, 20)`` int16 HU of the series: air, soft tissue, bone and a ramp."""
    z, y, x = np.meshgrid(np.arange(3), np.arange(16), np.arange(20), indexing="ij")
    hu = -1000 + 37 * x + 11 * y + 301 * z
    hu[:, 4:12, 6:14] = 40 + x[:, 4:12, 6:14]  # soft tissue
    hu[:, 7:9, 9:11] = 1200  # bone
    hu[0, 0, 0] = -1024
    return hu.astype(np.int16)


def write_fixture(folder: Path = FOLDER) -> list[Path]:
    """Write the series as signed 16-bit JPEG Lossless SV1 (1.2.840.10008.1.2.4.70)."""
    import gdcm  # only to regenerate the committed files

    tags = SeriesTags(
        patient_id="jpeg-lossless",
        series_uid=new_uid("jpeg-lossless-series"),
        study_uid=new_uid("jpeg-lossless-study"),
        rescale_intercept=0.0,
    )
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        plain = write_dicom_series(
            expected_hu(), tmp, SPACING, tags, origin=ORIGIN, compress=False, signed=True
        )
        for src in plain:
            reader = gdcm.ImageReader()
            reader.SetFileName(str(src))
            if not reader.Read():
                raise RuntimeError(f"{src}: gdcm could not read it")
            change = gdcm.ImageChangeTransferSyntax()
            change.SetTransferSyntax(
                gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1)
            )
            change.SetInput(reader.GetImage())
            if not change.Change():
                raise RuntimeError(f"{src}: gdcm could not transcode it")
            writer = gdcm.ImageWriter()
            writer.SetFileName(str(folder / src.name))
            writer.SetFile(reader.GetFile())
            writer.SetImage(change.GetOutput())
            if not writer.Write():
                raise RuntimeError(f"{folder / src.name}: gdcm could not write it")
    return sorted(folder.glob("*.dcm"))


if __name__ == "__main__":
    for path in write_fixture():
        print(path, path.stat().st_size)
