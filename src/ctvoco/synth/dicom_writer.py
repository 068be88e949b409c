"""Write a canonical HU volume as a DICOM CT series (one file per slice).

Used to build synthetic cohorts in the RSNA layout and to test the reader end to end:
RLE Lossless pixel data (RSNA's transfer syntax), positions, orientation, spacing and rescale
tags, file names that carry no slice order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

UID_ROOT = "1.2.826.0.1.3680043.10.1474."
"""Prefix of UIDs generated for synthetic data."""


@dataclass(frozen=True)
class SeriesTags:
    """Identity and acquisition tags of a written series."""

    patient_id: str
    series_uid: str
    study_uid: str
    series_number: int = 1
    rescale_intercept: float = -1024.0
    rescale_slope: float = 1.0


def new_uid(seed: str | None = None) -> str:
    """A valid DICOM UID; deterministic when ``seed`` is given."""
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[seed] if seed is not None else None)


def write_dicom_series(
    hu: np.ndarray,
    directory: str | os.PathLike[str],
    spacing: tuple[float, float, float],
    tags: SeriesTags,
    *,
    origin: tuple[float, float, float] = (-200.0, -200.0, 0.0),
    compress: bool = True,
    shuffle_names: np.random.Generator | None = None,
    bits_stored: int = 16,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
) -> list[Path]:
    """Write ``hu`` (canonical ``(D, H, W)``) as one file per slice under ``directory``.

    Slice ``i`` sits at patient z ``origin[2] - i * spacing[0]`` (slice 0 most cranial);
    files are named ``<InstanceNumber>.dcm``, with instance numbers increasing from the feet
    up as many scanners do, so neither name nor instance order is slice order; with
    ``shuffle_names`` the instance numbers are also permuted.

    Args:
        hu: ``(D, H, W)`` Hounsfield units (integers).
        directory: Output folder (created).
        spacing: ``(z, y, x)`` mm.
        tags: Patient/series identity and rescale parameters.
        origin: LPS position (mm) of the first voxel of slice 0.
        compress: RLE Lossless when true, else Explicit VR Little Endian.
        shuffle_names: Random generator to permute instance numbers (and so file names).
        bits_stored: ``BitsStored`` (12 or 16); with ``signed`` and 12 bits, stored values
            are written *without* sign extension into the high bits, as some RSNA files are.
        signed: ``PixelRepresentation`` 1 (two's complement) instead of 0.
        photometric: ``MONOCHROME2`` or ``MONOCHROME1``; only the tag differs, the stored
            values are the same (the rescale gives HU whatever the interpretation).

    Returns:
        The written file paths in slice order.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be (D, H, W); got shape {hu.shape}")
    depth = hu.shape[0]
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    instance_numbers = np.arange(depth, 0, -1)
    if shuffle_names is not None:
        instance_numbers = shuffle_names.permutation(instance_numbers)
    stored = _stored_values(hu, tags, bits_stored, signed, photometric)
    paths = []
    for i in range(depth):
        ds = _slice_dataset(stored[i], i, int(instance_numbers[i]), spacing, origin, tags)
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = int(signed)
        ds.PhotometricInterpretation = photometric
        if compress:
            # Keep the SOPInstanceUID derived from the series UID: the files stay identical
            # from one run to the next.
            ds.compress(RLELossless, encoding_plugin=_rle_encoder(), generate_instance_uid=False)
        path = out_dir / f"{int(instance_numbers[i])}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _stored_values(
    hu: np.ndarray, tags: SeriesTags, bits_stored: int, signed: bool, photometric: str
) -> np.ndarray:
    values = np.rint((hu.astype(np.float64) - tags.rescale_intercept) / tags.rescale_slope)
    low, high = (
        (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1)
        if signed
        else (0, 2**bits_stored - 1)
    )
    values = np.clip(values, low, high)
    if not signed:
        return values.astype(np.uint16)
    packed = values.astype(np.int16)
    if bits_stored < 16:
        # Keep only the low bits: the sign is not extended into the unused high bits.
        packed = (packed.view(np.uint16) & np.uint16(2**bits_stored - 1)).view(np.int16)
    return packed


def _slice_dataset(
    pixels: np.ndarray,
    index: int,
    instance_number: int,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    tags: SeriesTags,
) -> Dataset:
    sop_uid = new_uid(f"{tags.series_uid}/{index}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientID = tags.patient_id
    ds.StudyInstanceUID = tags.study_uid
    ds.SeriesInstanceUID = tags.series_uid
    ds.SeriesNumber = tags.series_number
    ds.InstanceNumber = instance_number
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [origin[0], origin[1], round(origin[2] - index * spacing[0], 4)]
    ds.PixelSpacing = [spacing[1], spacing[2]]
    ds.SliceThickness = spacing[0]
    ds.RescaleIntercept = tags.rescale_intercept
    ds.RescaleSlope = tags.rescale_slope
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _rle_encoder() -> str:
    import pydicom.pixels

    plugins = pydicom.pixels.get_encoder(RLELossless).available_plugins
    return "pylibjpeg" if "pylibjpeg" in plugins else "pydicom"
