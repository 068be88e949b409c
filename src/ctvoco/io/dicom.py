"""Read one DICOM CT series (a folder of slices) into a canonical :class:`CTVolume`.

What the reader guarantees (docs/algorithms.md §1.1):

- slices are ordered by their position along the slice normal, never by file name; when
  positions are missing it falls back to ``InstanceNumber`` and says so;
- stored values are sign-extended when ``BitsStored < BitsAllocated`` on signed data,
  then rescaled to HU: ``RescaleSlope * v + RescaleIntercept``, whatever the
  ``PhotometricInterpretation`` (``MONOCHROME1`` only says that low values display white;
  inverting the values would turn air into bone);
- RLE Lossless (RSNA's transfer syntax) decodes through pylibjpeg-rle; JPEG (baseline,
  lossless, JPEG-LS) and JPEG 2000 through python-gdcm; other compressed syntaxes go through
  pydicom's plugins, with an error naming the file and the package to install;
- a series mixing several SeriesInstanceUIDs, duplicate positions with different pixels, a
  non-axial orientation, and unreadable, truncated or undecodable files are errors naming
  the file; gaps (missing slices) and small gantry tilts are recorded as warnings;
- malformed header values (a missing ``Rows``, an ``ImagePositionPatient`` without three
  numbers, a ``PixelSpacing`` without two positive numbers, ``RescaleSlope`` 0, ...) are
  errors naming the file and the tag, and so is an image size (``Rows`` x ``Columns`` x
  ``BitsAllocated``) that does not match the length of the pixel data; this is checked
  before anything of that size is allocated;
- files without ``RescaleSlope``/``RescaleIntercept`` (required for CT) are read with slope
  1 and intercept 0 and a warning; values that cannot be Hounsfield units (see
  :func:`~ctvoco.io.volume.check_hounsfield`), such as unsigned values stored as HU + 1024
  read without their intercept, are an error naming the series.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    RLELossless,
)

from ctvoco.errors import DataError
from ctvoco.io.decoders import available_plugins, require_decoder, sign_extend
from ctvoco.io.volume import CTVolume, check_hounsfield, to_canonical

MAX_TILT_COS = 0.8
"""Below this |cos| between slice normal and patient z, a series is not axial (~37° tilt)."""

TILT_WARNING_COS = 0.996
"""Below this |cos| (~5°) a tilted gantry is reported as a warning."""

GAP_FACTOR = 1.5
"""A step between slices larger than this many times the median spacing is a gap."""

DUPLICATE_MM = 1e-3

MAX_COMPRESSED_PIXELS = 1 << 26
"""Largest ``Rows`` x ``Columns`` accepted for compressed pixel data (8192 x 8192).

Uncompressed pixel data is checked against its exact length; compressed data cannot be, so
an absurd size in the header must not make the decoder allocate gigabytes first."""

RLE_HEADER_BYTES = 64
RLE_MIN_BYTES_PER_RUN = 2
"""An RLE run encodes at most 128 bytes in at least 2 (a header byte and a value)."""


@dataclass
class _Slice:
    """One file's dataset and its validated geometry tags."""

    path: Path
    ds: Dataset
    rows: int
    columns: int
    position: np.ndarray | None
    """``(3,)`` ImagePositionPatient (mm), ``None`` when absent."""
    orientation: np.ndarray | None
    """``(6,)`` ImageOrientationPatient direction cosines, ``None`` when absent."""
    instance: int | None


def series_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of one series folder: ``*.dcm`` if any, else every non-hidden regular file."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory of DICOM files")
    files = sorted(p for p in folder.glob("*.dcm") if p.is_file())
    if not files:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: contains no DICOM files")
    return files


def read_dicom_series(
    path: str | os.PathLike[str], *, decoding_plugin: str | None = None
) -> CTVolume:
    """Read a folder holding one CT series (any file names, any order).

    Args:
        path: Folder of the series' ``.dcm`` files.
        decoding_plugin: Force a pydicom decoding plugin (``"pylibjpeg"``, ``"pydicom"``);
            by default RLE uses pylibjpeg-rle when installed.

    Returns:
        The series in HU, canonical orientation, with spacing, slice positions and warnings.

    Raises:
        DataError: The series cannot be read faithfully; the message names the file.
    """
    folder = Path(path)
    slices = [_read_header(f) for f in series_files(folder)]
    _check_single_series(folder, slices)
    row_cos, col_cos, normal = _orientation(folder, slices)
    warnings: list[str] = []
    if abs(normal[2]) < TILT_WARNING_COS:
        tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
        warnings.append(f"{folder}: slices are tilted {tilt:.1f} degrees from axial")

    slices, positions = _order_slices(folder, slices, normal, warnings)
    pixel_spacing = tag_numbers(slices[0].path, slices[0].ds, "PixelSpacing", 2, positive=True)
    if pixel_spacing is None:
        pixel_spacing = np.ones(2)
        warnings.append(f"{slices[0].path}: no PixelSpacing, assuming 1 mm")
    row_spacing, col_spacing = (float(v) for v in pixel_spacing)
    unscaled = _warn_missing_rescale(folder, slices, warnings)
    hu = _decode_all(slices, decoding_plugin)
    slices, positions, hu = _drop_duplicates(folder, slices, positions, hu, warnings)
    hint = (
        "the files have no RescaleSlope/RescaleIntercept, so their stored values were taken "
        "as HU; unsigned CT is often stored as HU + 1024"
        if unscaled
        else "check RescaleSlope and RescaleIntercept"
    )
    check_hounsfield(hu, str(folder), hint)
    z_spacing = _check_spacing(folder, positions, slices[0], warnings)

    # Array axes: slice (ordered cranial->caudal), row (along col_cos), column (along row_cos).
    directions = np.stack([[0.0, 0.0, -1.0], col_cos, row_cos])
    hu, spacing = to_canonical(hu, directions, (z_spacing, row_spacing, col_spacing))
    first = slices[0].ds
    return CTVolume(
        hu=hu,
        spacing=spacing,
        positions=positions,
        patient_id=str(first.get("PatientID", "")) or None,
        series_id=str(first.get("SeriesInstanceUID", "")) or None,
        source=str(folder),
        warnings=warnings,
        instance_numbers=tuple(s.instance for s in slices),
    )


def _read_header(path: Path) -> _Slice:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, struct.error, ...
        raise DataError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise DataError(f"{path}: has no pixel data")
    rows, columns = (_image_size(path, ds, keyword) for keyword in ("Rows", "Columns"))
    _check_pixel_data_size(path, ds, rows, columns)
    orientation = tag_numbers(path, ds, "ImageOrientationPatient", 6)
    if orientation is not None and (
        np.linalg.norm(orientation[:3]) < 1e-3 or np.linalg.norm(orientation[3:]) < 1e-3
    ):
        raise DataError(
            f"{path}: ImageOrientationPatient has a zero direction cosine: {orientation.tolist()}"
        )
    return _Slice(
        path,
        ds,
        rows=rows,
        columns=columns,
        position=tag_numbers(path, ds, "ImagePositionPatient", 3),
        orientation=orientation,
        instance=tag_integer(path, ds, "InstanceNumber"),
    )


def _image_size(path: Path, ds: Dataset, keyword: str) -> int:
    """``Rows`` or ``Columns``: required, a positive integer."""
    value = tag_integer(path, ds, keyword, minimum=1)
    if value is None:
        raise DataError(f"{path}: {keyword} is missing (the image size is unknown)")
    return value


def _check_pixel_data_size(path: Path, ds: Dataset, rows: int, columns: int) -> None:
    """The image size of the header must fit the pixel data it describes.

    Uncompressed data must hold exactly ``Rows x Columns x SamplesPerPixel x BitsAllocated / 8
    (x NumberOfFrames)`` bytes (plus one padding byte); compressed data may hold at most
    :data:`MAX_COMPRESSED_PIXELS` pixels per frame, and RLE frames at least the bytes the
    shortest encoding of that many pixels takes.

    Raises:
        DataError: The sizes disagree; the message names the file, the tags and the length.
    """
    samples = tag_integer(path, ds, "SamplesPerPixel", minimum=1) or 1
    bits = tag_integer(path, ds, "BitsAllocated", minimum=1)
    if bits is None:
        raise DataError(f"{path}: BitsAllocated is missing (the pixel size is unknown)")
    frames = tag_integer(path, ds, "NumberOfFrames", minimum=1) or 1
    size = f"Rows={rows}, Columns={columns}, SamplesPerPixel={samples}, BitsAllocated={bits}"
    if frames != 1:
        size += f", NumberOfFrames={frames}"
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    data = ds.PixelData
    if syntax is None or not syntax.is_encapsulated:
        expected = (rows * columns * samples * frames * bits + 7) // 8
        if len(data) not in (expected, expected + 1):
            raise DataError(
                f"{path}: {size} need {expected} bytes of pixel data, but PixelData holds "
                f"{len(data)} bytes; the image size in the header does not match the image"
            )
        return
    if syntax == RLELossless:
        segments = samples * ((bits + 7) // 8)
        runs = -(-rows * columns // 128)
        shortest = frames * (RLE_HEADER_BYTES + segments * runs * RLE_MIN_BYTES_PER_RUN)
        if len(data) < shortest:
            raise DataError(
                f"{path}: {size} need at least {shortest} bytes of RLE pixel data, but "
                f"PixelData holds {len(data)} bytes; the image size in the header does not "
                "match the image"
            )
    if rows * columns > MAX_COMPRESSED_PIXELS:
        raise DataError(
            f"{path}: {size} is {rows * columns} pixels per frame, more than the "
            f"{MAX_COMPRESSED_PIXELS} ctvoco decodes from compressed pixel data "
            f"({len(data)} bytes); the image size in the header is probably wrong"
        )


def tag_numbers(
    path: Path, ds: Dataset, keyword: str, count: int, *, positive: bool = False
) -> np.ndarray | None:
    """The ``count`` numbers of a decimal header tag, validated.

    Args:
        path: The file, named in errors.
        ds: Its dataset.
        keyword: Tag keyword, e.g. ``"ImagePositionPatient"``.
        count: Required number of values.
        positive: Require every value to be ``> 0``.

    Returns:
        ``(count,)`` float64 values, or ``None`` when the tag is absent or empty.

    Raises:
        DataError: The tag holds another number of values, or values that are not finite
            (positive) numbers; the message names the file and the tag.
    """
    raw = _tag_value(path, ds, keyword)
    if raw is None:
        return None
    items = list(raw) if isinstance(raw, list | tuple | MultiValue) else [raw]
    try:
        values = np.array([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {keyword} must hold {count} numbers; got {raw!r}") from None
    if values.shape != (count,):
        raise DataError(
            f"{path}: {keyword} must hold {count} numbers; got {values.size}: {values.tolist()}"
        )
    if not np.all(np.isfinite(values)) or (positive and np.any(values <= 0)):
        kind = "finite positive" if positive else "finite"
        raise DataError(f"{path}: {keyword} must hold {kind} numbers; got {values.tolist()}")
    return values


def tag_integer(path: Path, ds: Dataset, keyword: str, *, minimum: int | None = None) -> int | None:
    """One integer header tag (``Rows``, ``InstanceNumber``, ...), validated.

    Returns:
        The value, or ``None`` when the tag is absent or empty.

    Raises:
        DataError: The tag is not one integer (at least ``minimum``); names file and tag.
    """
    raw = _tag_value(path, ds, keyword)
    if raw is None:
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
        if not value.is_integer():
            raise ValueError(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {keyword} must be one integer; got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise DataError(f"{path}: {keyword} must be at least {minimum}; got {int(value)}")
    return int(value)


def _tag_value(path: Path, ds: Dataset, keyword: str) -> Any:
    """The value of a tag, ``None`` when absent or empty (a malformed element names the tag)."""
    try:
        if keyword not in ds:
            return None
        value = ds[keyword].value
    except Exception as exc:  # pydicom converts raw elements lazily and raises many types
        raise DataError(
            f"{path}: {keyword} could not be read ({type(exc).__name__}: {exc})"
        ) from exc
    if value is None or (isinstance(value, str | bytes) and not value.strip()):
        return None
    if isinstance(value, list | tuple | MultiValue) and len(value) == 0:
        return None
    return value


def _check_single_series(folder: Path, slices: list[_Slice]) -> None:
    uid_of = [str(s.ds.get("SeriesInstanceUID", "?")) for s in slices]
    uids = Counter(uid_of)
    if len(uids) > 1:
        (main_uid, n_main), *others = uids.most_common()
        listing = [f"{main_uid} ({n_main} files)"]
        for uid, n in others:
            names = [s.path.name for s, u in zip(slices, uid_of, strict=True) if u == uid]
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            listing.append(f"{uid} ({n} file{'s' if n > 1 else ''}: {shown})")
        raise DataError(f"{folder}: mixes {len(uids)} series: {'; '.join(listing)}")


def _orientation(folder: Path, slices: list[_Slice]) -> tuple[np.ndarray, ...]:
    first = slices[0]
    if first.orientation is None:
        row_cos, col_cos = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    else:
        values = first.orientation
        row_cos = values[:3] / np.linalg.norm(values[:3])
        col_cos = values[3:] / np.linalg.norm(values[3:])
        for s in slices[1:]:
            if s.orientation is not None and not np.allclose(s.orientation, values, atol=1e-3):
                raise DataError(f"{s.path}: ImageOrientationPatient differs from {first.path}")
    normal = np.cross(row_cos, col_cos)
    if abs(normal[2]) < MAX_TILT_COS:
        raise DataError(
            f"{folder}: not an axial series (slice normal {np.round(normal, 3).tolist()}); "
            "only axial CT is supported"
        )
    return row_cos, col_cos, normal


def _order_slices(
    folder: Path, slices: list[_Slice], normal: np.ndarray, warnings: list[str]
) -> tuple[list[_Slice], np.ndarray]:
    """Sort cranial first; return the slices and their patient-z positions (mm)."""
    if all(s.position is not None for s in slices):
        ipp = np.stack([s.position for s in slices])  # type: ignore[misc]
        along_normal = ipp @ normal
        # Cranial first: decreasing position along the normal oriented towards the head.
        key = -along_normal * np.sign(normal[2])
        order = np.argsort(key, kind="stable")
        positions = along_normal[order] * np.sign(normal[2])
        return [slices[i] for i in order], positions
    if not all(s.instance is not None for s in slices):
        raise DataError(
            f"{folder}: slices have neither ImagePositionPatient nor InstanceNumber; "
            "their order is unknown"
        )
    warnings.append(f"{folder}: no ImagePositionPatient, slices ordered by InstanceNumber")
    numbers = np.array([s.instance for s in slices], dtype=np.int64)
    if len(set(numbers.tolist())) != len(numbers):
        raise DataError(f"{folder}: duplicate InstanceNumbers and no positions")
    order = np.argsort(numbers, kind="stable")
    thickness = _slice_thickness(slices[0])
    return [slices[i] for i in order], -np.arange(len(slices), dtype=float) * thickness


def _slice_thickness(s: _Slice) -> float:
    """``SliceThickness`` (mm), 1 when absent or zero."""
    thickness = tag_numbers(s.path, s.ds, "SliceThickness", 1)
    if thickness is None or thickness[0] == 0:
        return 1.0
    return abs(float(thickness[0]))


def _decode_all(slices: list[_Slice], plugin: str | None) -> np.ndarray:
    first = slices[0]
    shape = (len(slices), first.rows, first.columns)
    rescaled = [_rescale_params(s) for s in slices]
    integral = all(slope == 1.0 and float(icpt).is_integer() for slope, icpt in rescaled)
    for s in slices:
        if (s.rows, s.columns) != shape[1:]:
            raise DataError(
                f"{s.path}: slice size {s.rows}x{s.columns} differs from "
                f"{first.path} ({shape[1]}x{shape[2]})"
            )
    out: np.ndarray | None = None
    for i, s in enumerate(slices):
        stored = _stored_values(s, plugin)
        if stored.shape != shape[1:]:
            raise DataError(
                f"{s.path}: pixel data decodes to {stored.shape[0]}x{stored.shape[1]}, but "
                f"Rows={s.rows}, Columns={s.columns}"
            )
        if out is None:  # allocated once a slice of the claimed size has really decoded
            out = np.empty(shape, dtype=np.int16 if integral else np.float32)
        slope, intercept = rescaled[i]
        if integral:
            _add_intercept(stored, int(intercept), out[i])
        else:
            out[i] = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    assert out is not None  # a series has at least one file
    return out


def _add_intercept(stored: np.ndarray, intercept: int, out: np.ndarray) -> None:
    """``out = clip(stored + intercept)`` into int16, in int16 arithmetic when that is exact."""
    top = int(stored.max())
    low, high = int(stored.min()) + intercept, top + intercept
    if low >= -32768 and high <= 32767 and top <= 32767 and -32768 <= intercept <= 32767:
        as_int16 = (
            stored.view(np.int16)
            if stored.dtype == np.uint16
            else stored.astype(np.int16, copy=False)
        )
        np.add(as_int16, np.int16(intercept), out=out)
    else:
        out[...] = np.clip(stored.astype(np.int32) + intercept, -32768, 32767)


def _rescale_params(s: _Slice) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)`` of one file; 1 and 0 where absent.

    Raises:
        DataError: ``RescaleSlope`` is 0 (every value would become the intercept).
    """
    slope = tag_numbers(s.path, s.ds, "RescaleSlope", 1)
    intercept = tag_numbers(s.path, s.ds, "RescaleIntercept", 1)
    if slope is not None and slope[0] == 0:
        raise DataError(
            f"{s.path}: RescaleSlope must not be 0 (every value would map to the intercept)"
        )
    return (
        float(slope[0]) if slope is not None else 1.0,
        float(intercept[0]) if intercept is not None else 0.0,
    )


def _warn_missing_rescale(folder: Path, slices: list[_Slice], warnings: list[str]) -> bool:
    """Warn when files lack ``RescaleSlope`` or ``RescaleIntercept``; True if any does."""
    lacking = [
        s
        for s in slices
        if _tag_value(s.path, s.ds, "RescaleSlope") is None
        or _tag_value(s.path, s.ds, "RescaleIntercept") is None
    ]
    if lacking:
        warnings.append(
            f"{folder}: {len(lacking)} of {len(slices)} files have no RescaleSlope or "
            "RescaleIntercept (required for CT); their stored values were read with slope 1 "
            f"and intercept 0 (e.g. {lacking[0].path.name})"
        )
    return bool(lacking)


def _stored_values(s: _Slice, plugin: str | None) -> np.ndarray:
    """Decoded, sign-extended stored values of one slice, ``(H, W)`` integer."""
    ds = s.ds
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    options: dict[str, Any] = {}
    if syntax is not None and syntax.is_compressed:
        require_decoder(s.path, syntax)
        if plugin is not None:
            options["decoding_plugin"] = plugin
        elif syntax == RLELossless and "pylibjpeg" in available_plugins(syntax):
            options["decoding_plugin"] = "pylibjpeg"
    try:
        # The functional API does not cache the array on the dataset; the compressed bytes
        # are dropped once decoded, so a series is held in memory only once.
        values = pydicom.pixels.pixel_array(ds, **options)
        del ds.PixelData
    except Exception as exc:  # truncated or corrupt pixel data surface as many types
        raise DataError(
            f"{s.path}: pixel data could not be decoded ({type(exc).__name__}: {exc})"
        ) from exc
    if values.ndim != 2:
        raise DataError(f"{s.path}: expected one 2D frame, got pixel array of shape {values.shape}")
    bits_allocated = tag_integer(s.path, ds, "BitsAllocated", minimum=1) or values.itemsize * 8
    bits_stored = tag_integer(s.path, ds, "BitsStored", minimum=1) or bits_allocated
    signed = tag_integer(s.path, ds, "PixelRepresentation") or 0
    # No MONOCHROME1 inversion: the photometric interpretation is a display rule, the
    # modality rescale alone gives HU.
    return sign_extend(values, bits_allocated, bits_stored, signed)


def _drop_duplicates(
    folder: Path,
    slices: list[_Slice],
    positions: np.ndarray,
    hu: np.ndarray,
    warnings: list[str],
) -> tuple[list[_Slice], np.ndarray, np.ndarray]:
    if len(positions) < 2:
        return slices, positions, hu
    same = np.flatnonzero(np.abs(np.diff(positions)) < DUPLICATE_MM)
    if same.size == 0:
        return slices, positions, hu
    for i in same:
        if not np.array_equal(hu[i], hu[i + 1]):
            raise DataError(
                f"{folder}: {slices[i].path.name} and {slices[i + 1].path.name} share position "
                f"{positions[i]:.2f} mm but differ in pixels"
            )
    warnings.append(f"{folder}: dropped {same.size} duplicate slice(s) with identical pixels")
    keep = np.setdiff1d(np.arange(len(slices)), same + 1)
    return [slices[i] for i in keep], positions[keep], np.ascontiguousarray(hu[keep])


def _check_spacing(
    folder: Path, positions: np.ndarray, first: _Slice, warnings: list[str]
) -> float:
    if len(positions) < 2:
        return _slice_thickness(first)
    steps = np.abs(np.diff(positions))
    spacing = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * spacing)
    if gaps.size:
        missing = int(np.round(steps[gaps] / spacing - 1).sum())
        where = ", ".join(f"{positions[i]:.1f}..{positions[i + 1]:.1f} mm" for i in gaps[:3])
        warnings.append(
            f"{folder}: {gaps.size} gap(s) in slice positions (about {missing} missing "
            f"slice(s)) at {where}"
        )
    return spacing
