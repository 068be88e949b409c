"""Tests for ctvoco.io.dicom (reader) and ctvoco.synth.dicom_writer, end to end on real files."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    MPEG2MPML,
    HTJ2KLossless,
    JPEG2000Lossless,
    RLELossless,
)

from ctvoco.errors import DataError, UserError
from ctvoco.io.decoders import sign_extend
from ctvoco.io.dicom import read_dicom_series, series_files
from ctvoco.synth.dicom_writer import SeriesTags, new_uid, write_dicom_series
from tests.conftest import small_phantom

SHAPE = (12, 48, 56)
SPACING = (2.5, 0.8, 0.7)  # (z, y, x) mm
ORIGIN = (-200.0, -180.0, 0.0)


def make_tags(name: str = "a", **kwargs) -> SeriesTags:
    return SeriesTags(
        patient_id=f"patient-{name}",
        series_uid=new_uid(f"series-{name}"),
        study_uid=new_uid(f"study-{name}"),
        **kwargs,
    )


def write_series(
    folder: Path, hu: np.ndarray | None = None, name: str = "a", **kwargs
) -> list[Path]:
    tag_kwargs = {k: kwargs.pop(k) for k in ("rescale_slope", "rescale_intercept") if k in kwargs}
    kwargs.setdefault("origin", ORIGIN)
    hu = small_phantom() if hu is None else hu
    return write_dicom_series(hu, folder, SPACING, make_tags(name, **tag_kwargs), **kwargs)


def edit(path: Path, change) -> None:
    """Read ``path``, apply ``change(ds)``, write it back (same name)."""
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def delete(keyword: str):
    """A change for :func:`edit` that removes one element."""

    def change(ds: pydicom.Dataset) -> None:
        delattr(ds, keyword)

    return change


def uncompressed_pixels(ds: pydicom.Dataset, pixels: np.ndarray) -> None:
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.Rows, ds.Columns = pixels.shape


# --------------------------------------------------------------------------- round trips

# (name, writer kwargs, expected dtype, absolute tolerance or None for exact)
ROUND_TRIP_CASES = [
    ("rle_shuffled", {"shuffle": True}, np.int16, None),
    ("uncompressed", {"compress": False}, np.int16, None),
    ("rle_sorted_names", {}, np.int16, None),
    # intercept 0 makes stored values negative; 12 bits are stored without sign extension
    (
        "signed_12bit_rle",
        {"signed": True, "bits_stored": 12, "rescale_intercept": 0.0},
        np.int16,
        None,
    ),
    (
        "signed_12bit_uncompressed",
        {"signed": True, "bits_stored": 12, "rescale_intercept": 0.0, "compress": False},
        np.int16,
        None,
    ),
    ("signed_16bit", {"signed": True, "rescale_intercept": 0.0}, np.int16, None),
    ("monochrome1_rle", {"photometric": "MONOCHROME1"}, np.int16, None),
    ("monochrome1_uncompressed", {"photometric": "MONOCHROME1", "compress": False}, np.int16, None),
    ("slope_half", {"rescale_slope": 0.5}, np.float32, 1e-4),
    ("slope_3", {"rescale_slope": 3.0}, np.float32, 1.5 + 1e-3),
    ("fractional_intercept", {"rescale_intercept": -1024.5}, np.float32, 0.5 + 1e-3),
]


@pytest.mark.parametrize(
    ("kwargs", "dtype", "atol"),
    [c[1:] for c in ROUND_TRIP_CASES],
    ids=[c[0] for c in ROUND_TRIP_CASES],
)
def test_round_trip(tmp_path, kwargs, dtype, atol):
    kwargs = dict(kwargs)
    if kwargs.pop("shuffle", False):
        kwargs["shuffle_names"] = np.random.default_rng(3)
    hu = small_phantom()
    paths = write_series(tmp_path / "series", hu, **kwargs)
    assert len(paths) == SHAPE[0]
    compressed = kwargs.get("compress", True)
    syntax = pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID
    if compressed:
        assert syntax == RLELossless
    else:
        assert not syntax.is_compressed

    volume = read_dicom_series(tmp_path / "series")
    assert volume.hu.dtype == dtype
    assert volume.shape == SHAPE
    if atol is None:
        np.testing.assert_array_equal(volume.hu, hu)
    else:
        np.testing.assert_allclose(volume.hu, hu, rtol=0, atol=atol)
    assert volume.spacing == pytest.approx(SPACING)
    assert np.all(np.diff(volume.positions) < 0)
    np.testing.assert_allclose(volume.positions, ORIGIN[2] - SPACING[0] * np.arange(SHAPE[0]))
    assert volume.series_id == make_tags().series_uid
    assert volume.patient_id == "patient-a"
    assert volume.source == str(tmp_path / "series")
    assert volume.warnings == []


def test_shuffled_names_carry_no_order(tmp_path):
    paths = write_series(tmp_path / "s", shuffle_names=np.random.default_rng(1))
    # slice i is not in file (i + 1) nor (D - i): the instance numbers were permuted
    names = [p.name for p in paths]
    assert names != [f"{n}.dcm" for n in range(SHAPE[0], 0, -1)]
    assert sorted(names) != names
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "s").hu, small_phantom())


def test_signed_12bit_is_stored_without_sign_extension(tmp_path):
    paths = write_series(
        tmp_path / "s", signed=True, bits_stored=12, rescale_intercept=0.0, compress=False
    )
    raw = np.frombuffer(pydicom.dcmread(paths[0]).PixelData, dtype=np.uint16)
    # -1000 HU (air) is 0xC18 in 12 bits: high bits clear, so the file is a real test case
    assert raw.max() <= 0x0FFF
    assert np.any(raw >= 0x0800)
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "s").hu, small_phantom())


def test_monochrome1_pixels_are_stored_like_monochrome2(tmp_path):
    """Only the tag differs: the stored values are HU minus the intercept, not reversed."""
    paths = write_series(tmp_path / "s", photometric="MONOCHROME1", compress=False)
    hu = small_phantom().astype(int)
    for i in (0, 5):
        ds = pydicom.dcmread(paths[i])
        assert ds.PhotometricInterpretation == "MONOCHROME1"
        expected = hu[i] - int(ds.RescaleIntercept)
        np.testing.assert_array_equal(ds.pixel_array.astype(int), expected)


# (BitsStored, PixelRepresentation, RescaleIntercept)
MONOCHROME1_RANGE_CASES = [
    pytest.param(12, 0, -1024.0, id="unsigned_12bit"),
    pytest.param(16, 0, -1024.0, id="unsigned_16bit"),
    pytest.param(16, 1, 0.0, id="signed_16bit"),
]


@pytest.mark.parametrize(("bits", "signed", "intercept"), MONOCHROME1_RANGE_CASES)
def test_monochrome1_is_rescaled_not_inverted(tmp_path, bits, signed, intercept):
    """A file written by another tool: one uniform slice and slices of different contrast."""
    hu = small_phantom()
    hu[3] = -1000  # a uniform slice
    hu[6] = np.clip(hu[6], -200, 300)  # a slice with another min/max than its neighbours
    folder = tmp_path / "s"
    paths = write_series(
        folder, hu, compress=False, signed=bool(signed), rescale_intercept=intercept
    )
    for path in paths:

        def change(ds):
            ds.PhotometricInterpretation = "MONOCHROME1"
            ds.BitsStored, ds.HighBit = bits, bits - 1

        edit(path, change)
    np.testing.assert_array_equal(read_dicom_series(folder).hu, hu)


def test_random_file_names(tmp_path):
    folder = tmp_path / "s"
    write_series(folder, shuffle_names=np.random.default_rng(5))
    for path in list(folder.iterdir()):
        path.rename(folder / f"{uuid.uuid4()}.dcm")
    np.testing.assert_array_equal(read_dicom_series(folder).hu, small_phantom())


def test_files_without_extension_and_hidden_files(tmp_path):
    folder = tmp_path / "s"
    write_series(folder)
    for path in list(folder.iterdir()):
        path.rename(folder / uuid.uuid4().hex)
    (folder / ".DS_Store").write_bytes(b"\x00\x01not dicom")
    assert len(series_files(folder)) == SHAPE[0]
    np.testing.assert_array_equal(read_dicom_series(folder).hu, small_phantom())


# ------------------------------------------------------------------- orientation

# (name, row cosine, column cosine): both along +-x / +-y; the stored pixels are rearranged
# so that the patient stays where it is.
ORIENTATION_CASES = [
    ("columns_to_the_right", (-1, 0, 0), (0, 1, 0)),
    ("rows_to_anterior", (1, 0, 0), (0, -1, 0)),
    ("rotated_180", (-1, 0, 0), (0, -1, 0)),
    ("transposed", (0, 1, 0), (1, 0, 0)),
    ("transposed_flipped", (0, -1, 0), (1, 0, 0)),
]


def reorient_slice(
    canonical: np.ndarray, row_cos: np.ndarray, col_cos: np.ndarray
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Stored pixels, PixelSpacing and in-plane IPP (x, y) of a canonical slice for an IOP.

    Canonical rows grow along +y (spacing SPACING[1]), columns along +x (SPACING[2]).
    """
    h, w = canonical.shape
    pixels = canonical
    if abs(row_cos[1]) > 0.5:  # stored columns run along y: transpose
        pixels = pixels.T
    col_axis_is_x = abs(row_cos[0]) > 0.5
    x_flip = (row_cos[0] if col_axis_is_x else col_cos[0]) < 0
    y_flip = (col_cos[1] if col_axis_is_x else row_cos[1]) < 0
    stored_rows_axis, stored_cols_axis = (0, 1) if col_axis_is_x else (1, 0)  # y, x positions
    if y_flip:
        pixels = np.flip(pixels, axis=stored_rows_axis)
    if x_flip:
        pixels = np.flip(pixels, axis=stored_cols_axis)
    dy, dx = SPACING[1], SPACING[2]
    spacing = (dy, dx) if col_axis_is_x else (dx, dy)
    x0 = ORIGIN[0] + (w - 1) * dx if x_flip else ORIGIN[0]
    y0 = ORIGIN[1] + (h - 1) * dy if y_flip else ORIGIN[1]
    return np.ascontiguousarray(pixels), spacing, (x0, y0)


@pytest.mark.parametrize(
    ("row_cos", "col_cos"),
    [c[1:] for c in ORIENTATION_CASES],
    ids=[c[0] for c in ORIENTATION_CASES],
)
def test_in_plane_orientation(tmp_path, row_cos, col_cos):
    hu = small_phantom()
    folder = tmp_path / "s"
    paths = write_series(folder, hu, compress=False)
    row_cos, col_cos = np.array(row_cos, float), np.array(col_cos, float)
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        canonical_stored = ds.pixel_array.copy()
        pixels, spacing, (x0, y0) = reorient_slice(canonical_stored, row_cos, col_cos)
        uncompressed_pixels(ds, pixels)
        ds.PixelSpacing = list(spacing)
        ds.ImageOrientationPatient = [*row_cos.tolist(), *col_cos.tolist()]
        ds.ImagePositionPatient = [x0, y0, ORIGIN[2] - i * SPACING[0]]
        ds.save_as(path, enforce_file_format=True)
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.spacing == pytest.approx(SPACING)
    assert np.all(np.diff(volume.positions) < 0)


@pytest.mark.parametrize("origin_z", [0.0, 1500.0, -800.0])
@pytest.mark.parametrize("normal_points", ["cranial", "caudal"])
def test_slice_direction(tmp_path, normal_points, origin_z):
    """Positions increasing cranially (normal +z) or caudally (normal -z) give the same array."""
    hu = small_phantom()
    folder = tmp_path / "s"
    paths = write_series(folder, hu, compress=False, origin=(ORIGIN[0], ORIGIN[1], origin_z))
    if normal_points == "caudal":
        # row cosine -x: normal = (-x) x (+y) = -z, positions along the normal grow to the feet
        row_cos, col_cos = np.array([-1.0, 0, 0]), np.array([0, 1.0, 0])
        for i, path in enumerate(paths):
            ds = pydicom.dcmread(path)
            pixels, _, (x0, y0) = reorient_slice(ds.pixel_array.copy(), row_cos, col_cos)
            uncompressed_pixels(ds, pixels)
            ds.ImageOrientationPatient = [*row_cos.tolist(), *col_cos.tolist()]
            ds.ImagePositionPatient = [x0, y0, origin_z - i * SPACING[0]]
            ds.save_as(path, enforce_file_format=True)
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    np.testing.assert_allclose(volume.positions, origin_z - SPACING[0] * np.arange(SHAPE[0]))


def test_small_tilt_is_a_warning(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    t = np.radians(10)
    for path in paths:
        edit(
            path,
            lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, np.cos(t), -np.sin(t)]),
        )
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, small_phantom())
    assert any("tilted 10.0 degrees" in w for w in volume.warnings)


NON_AXIAL_CASES = [
    ("sagittal", [0, 1, 0, 0, 0, -1]),
    ("coronal", [1, 0, 0, 0, 0, -1]),
]


@pytest.mark.parametrize(("name", "iop"), NON_AXIAL_CASES, ids=[c[0] for c in NON_AXIAL_CASES])
def test_non_axial_series(tmp_path, name, iop):
    folder = tmp_path / name
    for path in write_series(folder):
        edit(path, lambda ds: setattr(ds, "ImageOrientationPatient", iop))
    with pytest.raises(DataError, match=f"{name}: not an axial series"):
        read_dicom_series(folder)


def test_orientation_differs_between_files(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit(paths[4], lambda ds: setattr(ds, "ImageOrientationPatient", [-1, 0, 0, 0, 1, 0]))
    with pytest.raises(
        DataError, match=rf"{re.escape(str(paths[4]))}: ImageOrientationPatient differs"
    ):
        read_dicom_series(folder)


# ------------------------------------------------------------------------- ordering


def test_instance_number_fallback(tmp_path):
    hu = small_phantom()
    folder = tmp_path / "s"
    paths = write_series(folder, hu, shuffle_names=np.random.default_rng(2))

    def drop_position(index):
        def change(ds):
            del ds.ImagePositionPatient
            ds.InstanceNumber = index + 1  # cranial first

        return change

    for i, path in enumerate(paths):
        edit(path, drop_position(i))
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    assert any("InstanceNumber" in w for w in volume.warnings)
    assert np.all(np.diff(volume.positions) < 0)
    assert volume.spacing[0] == pytest.approx(SPACING[0])  # from SliceThickness


def test_instance_number_fallback_follows_instance_numbers(tmp_path):
    """Without positions the order is the InstanceNumber order, whatever it means."""
    hu = small_phantom()
    folder = tmp_path / "s"
    paths = write_series(folder, hu, shuffle_names=np.random.default_rng(4))
    numbers = [int(pydicom.dcmread(p).InstanceNumber) for p in paths]
    for path in paths:
        edit(path, delete("ImagePositionPatient"))
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, hu[np.argsort(numbers)])


def test_no_positions_and_duplicate_instance_numbers(tmp_path):
    folder = tmp_path / "s"
    for path in write_series(folder):

        def change(ds):
            del ds.ImagePositionPatient
            ds.InstanceNumber = 1

        edit(path, change)
    with pytest.raises(DataError, match="s: duplicate InstanceNumbers"):
        read_dicom_series(folder)


def test_no_positions_no_instance_numbers(tmp_path):
    folder = tmp_path / "s"
    for path in write_series(folder):

        def change(ds):
            del ds.ImagePositionPatient
            del ds.InstanceNumber

        edit(path, change)
    with pytest.raises(DataError, match="s: slices have neither ImagePositionPatient nor"):
        read_dicom_series(folder)


def test_mixed_series(tmp_path):
    write_series(tmp_path / "a", name="a")
    other = write_series(tmp_path / "b", name="b", origin=(ORIGIN[0], ORIGIN[1], -500.0))
    shutil.copy(other[3], tmp_path / "a" / "from_b.dcm")
    with pytest.raises(DataError, match=r"a: mixes 2 series") as excinfo:
        read_dicom_series(tmp_path / "a")
    message = str(excinfo.value)
    assert make_tags("a").series_uid in message
    assert f"{make_tags('b').series_uid} (1 file: from_b.dcm)" in message


def test_duplicate_position_with_different_pixels(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)
    copy = folder / "copy.dcm"
    shutil.copy(paths[5], copy)

    def change(ds):
        pixels = ds.pixel_array.copy()
        pixels[10, 10] += 50
        uncompressed_pixels(ds, pixels)

    edit(copy, change)
    with pytest.raises(DataError, match="share position") as excinfo:
        read_dicom_series(folder)
    message = str(excinfo.value)
    assert paths[5].name in message
    assert "copy.dcm" in message
    assert str(folder) in message


def test_duplicate_position_with_identical_pixels(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    shutil.copy(paths[5], folder / "copy.dcm")
    shutil.copy(paths[0], folder / "copy0.dcm")
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, small_phantom())
    assert any("dropped 2 duplicate" in w for w in volume.warnings)
    assert len(volume.positions) == SHAPE[0]


def test_missing_slice(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    paths[6].unlink()
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, np.delete(small_phantom(), 6, axis=0))
    assert volume.shape == (SHAPE[0] - 1, *SHAPE[1:])
    assert volume.spacing[0] == pytest.approx(SPACING[0])  # the median step, not the gap
    gaps = [w for w in volume.warnings if "gap" in w]
    assert len(gaps) == 1
    assert "about 1 missing" in gaps[0]


def test_single_slice(tmp_path):
    folder = tmp_path / "s"
    hu = small_phantom()[:1]
    write_series(folder, hu)
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.spacing == pytest.approx(SPACING)  # z from SliceThickness


# ---------------------------------------------------------------------- bad files


def set_value(keyword: str, value):
    """A change for :func:`edit` that sets one element."""

    def change(ds: pydicom.Dataset) -> None:
        setattr(ds, keyword, value)

    return change


def store_text(keyword: str, vr: str, text: str):
    """A file change that stores ``text`` as the raw value of the ``vr`` tag ``keyword``.

    pydicom refuses to build such a value, so the element is written as LO and its VR is
    then relabelled in the saved bytes (explicit VR little endian).
    """

    def change(path: Path) -> None:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        assert tag is not None

        def as_lo(ds: pydicom.Dataset) -> None:
            if keyword in ds:
                delattr(ds, keyword)
            ds.add_new(tag, "LO", text)

        edit(path, as_lo)
        raw = path.read_bytes()
        head = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") + b"LO"
        at = raw.index(head)
        path.write_bytes(raw[: at + 4] + vr.encode() + raw[at + 6 :])

    return change


def editing(change):
    """A file change applying a dataset change with :func:`edit`."""
    return lambda path: edit(path, change)


# (name, file index in slice order, file change, tag named in the error): header values
# that used to escape as AttributeError / ValueError / TypeError. Index 0 is the cranial
# file, whose PixelSpacing the series uses.
MALFORMED_HEADER_CASES = [
    ("no_rows", 7, editing(delete("Rows")), "Rows"),
    ("no_columns", 3, editing(delete("Columns")), "Columns"),
    ("zero_rows", 2, editing(set_value("Rows", 0)), "Rows"),
    (
        "position_two_values",
        4,
        editing(set_value("ImagePositionPatient", [1.0, 2.0])),
        "ImagePositionPatient",
    ),
    (
        "position_not_numbers",
        5,
        store_text("ImagePositionPatient", "DS", "a\\b\\c"),
        "ImagePositionPatient",
    ),
    ("spacing_one_value", 0, editing(set_value("PixelSpacing", [0.7])), "PixelSpacing"),
    ("spacing_zero", 0, editing(set_value("PixelSpacing", [0.0, 0.7])), "PixelSpacing"),
    (
        "orientation_five_values",
        2,
        editing(set_value("ImageOrientationPatient", [1, 0, 0, 0, 1])),
        "ImageOrientationPatient",
    ),
    (
        "orientation_zero_cosine",
        0,
        editing(set_value("ImageOrientationPatient", [0, 0, 0, 0, 1, 0])),
        "ImageOrientationPatient",
    ),
    ("instance_number_text", 1, store_text("InstanceNumber", "IS", "x1"), "InstanceNumber"),
    ("slope_two_values", 6, editing(set_value("RescaleSlope", [1.0, 2.0])), "RescaleSlope"),
]


@pytest.mark.parametrize(
    ("index", "change", "tag"),
    [c[1:] for c in MALFORMED_HEADER_CASES],
    ids=[c[0] for c in MALFORMED_HEADER_CASES],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_malformed_header_is_a_data_error_naming_file_and_tag(tmp_path, index, change, tag):
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)
    change(paths[index])
    with pytest.raises(DataError, match=rf"^{re.escape(str(paths[index]))}: {tag}\b"):
        read_dicom_series(folder)


def test_empty_optional_tags_fall_back_like_missing_ones(tmp_path):
    """Empty (type 2) PixelSpacing and positions are treated as absent, with warnings."""
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)
    for i, path in enumerate(paths):

        def change(ds, i=i):
            ds.ImagePositionPatient = ""
            ds.PixelSpacing = ""
            ds.InstanceNumber = i + 1

        edit(path, change)
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, small_phantom())
    assert volume.spacing == pytest.approx((SPACING[0], 1.0, 1.0))
    assert any("no PixelSpacing" in w for w in volume.warnings)
    assert any("ordered by InstanceNumber" in w for w in volume.warnings)


def test_corrupt_file(tmp_path):
    folder = tmp_path / "s"
    write_series(folder)
    (folder / "garbage.dcm").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(DataError, match=r"garbage\.dcm: not a readable DICOM file"):
        read_dicom_series(folder)


def test_file_without_pixel_data(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit(paths[2], delete("PixelData"))
    with pytest.raises(DataError, match=rf"{re.escape(str(paths[2]))}: has no pixel data"):
        read_dicom_series(folder)


def test_slice_size_differs(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)

    def change(ds):
        uncompressed_pixels(ds, ds.pixel_array[:-2].copy())

    edit(paths[3], change)
    with pytest.raises(DataError, match=rf"{re.escape(str(paths[3]))}: slice size 46x56 differs"):
        read_dicom_series(folder)


@pytest.mark.parametrize("cut", [2, 100, 4000])
def test_truncated_uncompressed_file(tmp_path, cut):
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)
    data = paths[4].read_bytes()
    paths[4].write_bytes(data[:-cut])
    with pytest.raises(DataError, match=rf"{re.escape(str(paths[4]))}: "):
        read_dicom_series(folder)


@pytest.mark.parametrize("cut", [2, 40, "half"])
def test_truncated_rle_fragment(tmp_path, cut):
    folder = tmp_path / "s"
    paths = write_series(folder)

    def change(ds):
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        keep = len(frame) // 2 if cut == "half" else len(frame) - cut
        ds.PixelData = encapsulate([frame[:keep]])

    edit(paths[7], change)
    assert pydicom.dcmread(paths[7]).file_meta.TransferSyntaxUID == RLELossless
    with pytest.raises(
        DataError, match=rf"{re.escape(str(paths[7]))}: pixel data could not be decoded"
    ):
        read_dicom_series(folder)


def set_syntax(path: Path, syntax) -> None:
    """Re-label ``path`` as ``syntax`` with encapsulated garbage pixel data."""

    def change(ds):
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([np.random.default_rng(0).bytes(600)])
        ds["PixelData"].VR = "OB"

    edit(path, change)


# (syntax, whether the test needs its decoder to be missing, expected message). JPEG, JPEG-LS
# and JPEG 2000 decode with the core install; their missing-decoder message is tested in
# test_dicom_jpeg.py.
SYNTAX_CASES = [
    pytest.param(
        HTJ2KLossless,
        True,
        "no decoder plugin for it is installed",
        id="htj2k",
    ),
    pytest.param(MPEG2MPML, False, "is not supported by pydicom", id="mpeg2"),
]


@pytest.mark.parametrize(("syntax", "needs_missing_decoder", "match"), SYNTAX_CASES)
def test_unsupported_transfer_syntax(tmp_path, syntax, needs_missing_decoder, match):
    if needs_missing_decoder and pydicom.pixels.get_decoder(syntax).is_available:
        pytest.skip(f"a decoder plugin for {syntax.name} is installed here")
    folder = tmp_path / "s"
    paths = write_series(folder)
    set_syntax(paths[3], syntax)
    with pytest.raises(DataError, match=match) as excinfo:
        read_dicom_series(folder)
    message = str(excinfo.value)
    assert str(paths[3]) in message
    assert syntax in message


def test_undecodable_jpeg2000_names_the_file(tmp_path):
    """Garbage JPEG 2000 data is an error naming the file, whether or not a plugin exists."""
    folder = tmp_path / "s"
    paths = write_series(folder)
    set_syntax(paths[3], JPEG2000Lossless)
    with pytest.raises(DataError, match=rf"{re.escape(str(paths[3]))}: pixel data (is|could not)"):
        read_dicom_series(folder)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").write_bytes(b"x")
    with pytest.raises(DataError, match="empty: contains no DICOM files"):
        read_dicom_series(tmp_path / "empty")


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_not_a_directory(tmp_path, kind):
    path = tmp_path / "thing.dcm"
    if kind == "file":
        write_series(tmp_path / "s")
        shutil.copy(tmp_path / "s" / "1.dcm", path)
    with pytest.raises(DataError, match=r"thing\.dcm: not a directory"):
        read_dicom_series(path)


def test_data_error_is_a_user_error():
    assert issubclass(DataError, UserError)
    assert issubclass(DataError, ValueError)


# ------------------------------------------------------- header against pixel data


def set_image_size(rows: int, columns: int):
    """A change for :func:`edit` that claims another image size, pixel data unchanged."""

    def change(ds: pydicom.Dataset) -> None:
        ds.Rows, ds.Columns = rows, columns

    return change


@pytest.mark.parametrize(("rows", "columns"), [(65535, 65535), (65535, 56), (24, 56)])
def test_image_size_not_matching_uncompressed_pixel_data(tmp_path, rows, columns):
    """Every file of the series claims another size: an error naming the file and the tags,
    raised before anything of the claimed size is allocated."""
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)
    for path in paths:
        edit(path, set_image_size(rows, columns))
    expected = rows * columns * 2
    with pytest.raises(DataError) as info:
        read_dicom_series(folder)
    message = str(info.value)
    assert re.match(rf"^{re.escape(str(folder))}/\d+\.dcm: ", message), message
    for text in (
        f"Rows={rows}",
        f"Columns={columns}",
        "BitsAllocated=16",
        "SamplesPerPixel=1",
        f"{expected} bytes",
        f"PixelData holds {SHAPE[1] * SHAPE[2] * 2} bytes",
    ):
        assert text in message, message


def test_image_size_not_matching_rle_pixel_data(tmp_path):
    """RLE frames far too short for the claimed size are refused before decoding."""
    folder = tmp_path / "s"
    paths = write_series(folder)
    for path in paths:
        edit(path, set_image_size(65535, 65535))
    with pytest.raises(DataError) as info:
        read_dicom_series(folder)
    message = str(info.value)
    assert re.match(rf"^{re.escape(str(folder))}/\d+\.dcm: ", message), message
    assert "Rows=65535" in message and "Columns=65535" in message, message
    assert "RLE" in message, message


def test_slice_claiming_one_row_less_than_its_pixels(tmp_path):
    """A header smaller than its pixel data would silently read a part of the image."""
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)
    edit(paths[5], set_image_size(SHAPE[1] - 1, SHAPE[2]))
    with pytest.raises(DataError, match=rf"^{re.escape(str(paths[5]))}: Rows={SHAPE[1] - 1}, "):
        read_dicom_series(folder)


# ------------------------------------------------------------------------- rescale


def without_rescale_tags(paths: list[Path]) -> None:
    for path in paths:
        edit(path, delete("RescaleSlope"))
        edit(path, delete("RescaleIntercept"))


def test_unsigned_ct_without_rescale_tags_is_refused(tmp_path):
    """Stored values HU + 1024 read with intercept 0 would be shifted by 1024 HU."""
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)  # unsigned, intercept -1024
    without_rescale_tags(paths)
    with pytest.raises(DataError) as info:
        read_dicom_series(folder)
    message = str(info.value)
    assert message.startswith(f"{folder}: "), message
    assert "not Hounsfield units" in message, message
    assert "RescaleIntercept" in message and "RescaleSlope" in message, message


def test_signed_ct_without_rescale_tags_reads_with_a_warning(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False, signed=True, rescale_intercept=0.0)
    without_rescale_tags(paths[:3])
    volume = read_dicom_series(folder)
    np.testing.assert_array_equal(volume.hu, small_phantom())
    (warning,) = [w for w in volume.warnings if "Rescale" in w]
    assert warning.startswith(f"{folder}: 3 of {SHAPE[0]} files have no RescaleSlope"), warning
    assert "RescaleIntercept" in warning


def test_rescale_slope_zero_is_an_error(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)
    edit(paths[4], set_value("RescaleSlope", 0))
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(paths[4]))}: RescaleSlope must not be 0"
    ):
        read_dicom_series(folder)


def test_wrong_intercept_is_refused(tmp_path):
    """Values that cannot be HU are refused even when the tags are present."""
    folder = tmp_path / "s"
    paths = write_series(folder, compress=False)
    for path in paths:
        edit(path, set_value("RescaleIntercept", 0))
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder))}: .*not Hounsfield units"):
        read_dicom_series(folder)


# ----------------------------------------------------------------------- sign_extend


def _u16(values) -> np.ndarray:
    return (np.array(values, dtype=np.int64) & 0xFFFF).astype(np.uint16)


# (name, values, bits_allocated, bits_stored, signed, expected)
SIGN_EXTEND_CASES = [
    (
        "12_in_16_uint16",
        _u16([-1000 & 0xFFF, 0xFFF, 0x800, 0x7FF, 0]),
        16,
        12,
        1,
        [-1000, -1, -2048, 2047, 0],
    ),
    ("12_in_16_int16", _u16([-1000 & 0xFFF, 0xFFF]).view(np.int16), 16, 12, 1, [-1000, -1]),
    (
        "already_extended",
        np.array([-1000, -1, -2048, 2047, 0], dtype=np.int16),
        16,
        12,
        1,
        [-1000, -1, -2048, 2047, 0],
    ),
    ("unsigned_untouched", _u16([0xC18, 0xFFF, 5]), 16, 12, 0, [0xC18, 0xFFF, 5]),
    (
        "full_width_signed",
        np.array([-1000, 32767, -32768], dtype=np.int16),
        16,
        16,
        1,
        [-1000, 32767, -32768],
    ),
    ("10_in_16", _u16([0x3FF, 0x200, 0x1FF]), 16, 10, 1, [-1, -512, 511]),
    ("6_in_8", np.array([0x3F, 0x20, 0x1F], dtype=np.uint8), 8, 6, 1, [-1, -32, 31]),
]


@pytest.mark.parametrize(
    ("values", "bits_allocated", "bits_stored", "signed", "expected"),
    [c[1:] for c in SIGN_EXTEND_CASES],
    ids=[c[0] for c in SIGN_EXTEND_CASES],
)
def test_sign_extend(values, bits_allocated, bits_stored, signed, expected):
    out = sign_extend(values.copy(), bits_allocated, bits_stored, signed)
    np.testing.assert_array_equal(out, expected)
    if not signed or bits_stored == bits_allocated:
        assert out.dtype == values.dtype
    else:
        assert out.dtype == np.dtype(f"int{bits_allocated}")
    # idempotent
    again = sign_extend(out, bits_allocated, bits_stored, signed)
    np.testing.assert_array_equal(again, expected)


def test_sign_extend_2d():
    values = _u16(np.full((3, 4), -1000 & 0xFFF))
    np.testing.assert_array_equal(sign_extend(values, 16, 12, 1), np.full((3, 4), -1000))


# ------------------------------------------------------------------------ writer


def test_writer_layout(tmp_path):
    paths = write_series(tmp_path / "s")
    assert [p.name for p in paths] == [f"{n}.dcm" for n in range(SHAPE[0], 0, -1)]
    first = pydicom.dcmread(paths[0])
    assert first.Modality == "CT"
    assert [float(v) for v in first.ImagePositionPatient] == list(ORIGIN)
    assert [float(v) for v in first.PixelSpacing] == list(SPACING[1:])
    assert float(first.SliceThickness) == SPACING[0]


def test_writer_rejects_2d(tmp_path):
    with pytest.raises(ValueError, match="must be \\(D, H, W\\)"):
        write_dicom_series(np.zeros((4, 4)), tmp_path, SPACING, make_tags())


def test_new_uid():
    assert new_uid("x") == new_uid("x")
    assert new_uid("x") != new_uid("y")
    assert new_uid() != new_uid()
    assert new_uid("x").startswith("1.2.826.0.1.3680043.10.1474.")
    assert len(new_uid()) <= 64
