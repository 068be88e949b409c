"""Tests for ctvoco.io.nifti: orientation by the affine, case ids, broken files."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctvoco.errors import DataError
from ctvoco.io.nifti import RAS_STORAGE, nifti_case_id, read_nifti, write_nifti
from ctvoco.io.volume import CANONICAL_DIRECTIONS
from tests.conftest import small_phantom

SHAPE = (12, 48, 56)
SPACING = (2.5, 0.8, 0.7)  # (z, y, x) mm, anisotropic
ORIGIN_LPS = (12.0, -30.0, 85.0)

X, Y, Z = np.eye(3)  # LPS unit vectors


# (name, storage directions: row a = LPS direction of stored axis a, nibabel axis codes)
STORAGE_CASES = [
    ("ras_default", RAS_STORAGE, ("R", "A", "S")),
    ("lps_identity", np.eye(3), ("L", "P", "S")),
    ("permutation", np.stack([Z, X, -Y]), ("S", "L", "A")),
    ("flips", np.stack([X, -Y, -Z]), ("L", "A", "I")),
    ("canonical", CANONICAL_DIRECTIONS, ("I", "P", "L")),
    ("permutation_flipped", np.stack([Y, -Z, -X]), ("P", "I", "R")),
]


def canonical_from_nibabel(path: Path) -> np.ndarray:
    """Independent reference: nibabel's RAS+ reorientation, then RAS+ -> canonical axes.

    In RAS+ voxel axes grow to the Right, Anterior, Superior; canonical (D, H, W) grows
    inferior, posterior and to the patient's left: reverse the axes and flip all three.
    """
    ras = np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj)
    return ras.transpose(2, 1, 0)[::-1, ::-1, ::-1]


@pytest.mark.parametrize(
    ("directions", "codes"),
    [c[1:] for c in STORAGE_CASES],
    ids=[c[0] for c in STORAGE_CASES],
)
def test_write_read_round_trip(tmp_path, directions, codes):
    hu = small_phantom()
    path = write_nifti(
        hu, tmp_path / "case_0000.nii.gz", SPACING, directions=directions, origin_lps=ORIGIN_LPS
    )
    image = nib.load(path)
    assert nib.aff2axcodes(image.affine) == codes
    assert image.get_data_dtype() == np.int16
    np.testing.assert_array_equal(canonical_from_nibabel(path), hu)

    volume = read_nifti(path)
    assert volume.hu.dtype == np.int16
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.spacing == pytest.approx(SPACING)
    assert volume.series_id == "case"
    assert volume.source == str(path)
    assert volume.warnings == []
    assert len(volume.positions) == SHAPE[0]
    np.testing.assert_allclose(np.diff(volume.positions), -SPACING[0])
    # the voxel spacing on disk follows the stored axes
    zooms = np.array(image.header.get_zooms())
    np.testing.assert_allclose(np.sort(zooms), np.sort(SPACING))


def test_storage_really_differs_between_cases(tmp_path):
    hu = small_phantom()
    affines, arrays = [], []
    for name, directions, _ in STORAGE_CASES:
        image = nib.load(write_nifti(hu, tmp_path / f"{name}.nii", SPACING, directions=directions))
        affines.append(image.affine[:3, :3])
        arrays.append(np.asanyarray(image.dataobj))
    for (i, a), (j, b) in itertools.combinations(enumerate(affines), 2):
        assert not np.allclose(a, b), (STORAGE_CASES[i][0], STORAGE_CASES[j][0])
        same_layout = arrays[i].shape == arrays[j].shape and np.array_equal(arrays[i], arrays[j])
        assert not same_layout, (STORAGE_CASES[i][0], STORAGE_CASES[j][0])
    # the default is RAS+ storage: a positive diagonal affine of the (x, y, z) spacings
    np.testing.assert_allclose(affines[0], np.diag([SPACING[2], SPACING[1], SPACING[0]]))


def test_affine_origin_and_positions(tmp_path):
    path = write_nifti(small_phantom(), tmp_path / "a.nii.gz", SPACING, origin_lps=ORIGIN_LPS)
    affine = nib.load(path).affine
    np.testing.assert_allclose(affine[:3, 3], [-ORIGIN_LPS[0], -ORIGIN_LPS[1], ORIGIN_LPS[2]])
    volume = read_nifti(path)
    # RAS storage: stored slice 0 is the most caudal, so the canonical first slice is the top
    top = ORIGIN_LPS[2] + (SHAPE[0] - 1) * SPACING[0]
    np.testing.assert_allclose(volume.positions, top - SPACING[0] * np.arange(SHAPE[0]))


def test_reads_an_external_ras_file(tmp_path):
    """A file written by plain nibabel (RAS+, x fastest) reads to the expected canonical array."""
    hu = small_phantom()
    stored = hu[::-1, ::-1, ::-1].transpose(2, 1, 0)  # canonical -> RAS+ (x right, y ant, z up)
    affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    path = tmp_path / "ext.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), affine), path)
    volume = read_nifti(path)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.spacing == pytest.approx(SPACING)


def test_float_data_becomes_float32(tmp_path):
    hu = small_phantom().astype(np.float64) + 0.25
    path = tmp_path / "f.nii.gz"
    write_nifti(hu, path, SPACING)
    volume = read_nifti(path)
    assert volume.hu.dtype == np.float32
    np.testing.assert_allclose(volume.hu, hu, atol=1e-4)


def test_scaled_int16_becomes_float32(tmp_path):
    stored = small_phantom()[::-1, ::-1, ::-1].transpose(2, 1, 0)
    image = nib.Nifti1Image(np.ascontiguousarray(stored), np.diag([0.7, 0.8, 2.5, 1.0]))
    image.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / "scaled.nii"
    nib.save(image, path)
    volume = read_nifti(path)
    assert volume.hu.dtype == np.float32
    np.testing.assert_allclose(volume.hu, small_phantom() * 0.5 - 10.0)


def test_oblique_affine_warns(tmp_path):
    t = np.radians(20)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.8, 2.5])
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(small_phantom().transpose(2, 1, 0).copy(), affine), path)
    volume = read_nifti(path)
    assert any("oblique" in w for w in volume.warnings)


CASE_ID_CASES = [
    ("FLARE23_0001_0000.nii.gz", "FLARE23_0001"),
    ("/data/imagesTr/FLARE23_0001_0000.nii.gz", "FLARE23_0001"),
    ("FLARE23_0001_0000.nii", "FLARE23_0001"),
    ("foo.nii", "foo"),
    ("a_b.nii.gz", "a_b"),
    ("case_12.nii.gz", "case_12"),  # not a 4-digit channel suffix
    ("case_abcd.nii.gz", "case_abcd"),
    ("0000.nii.gz", "0000"),  # nothing before the suffix: kept
    ("scan.v2.nii.gz", "scan.v2"),
]


@pytest.mark.parametrize(("name", "expected"), CASE_ID_CASES)
def test_nifti_case_id(name, expected):
    assert nifti_case_id(name) == expected
    assert nifti_case_id(Path(name)) == expected


def _truncate_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _truncate_stream(data: bytes) -> bytes:
    return data[:-40]  # inside the deflate stream: voxels are lost


def _bad_gzip_magic(data: bytes) -> bytes:
    return b"\x00\x00" + data[2:]


def _bad_magic(data: bytes) -> bytes:
    raw = bytearray(gzip.decompress(data))
    raw[344:348] = b"xxxx"  # NIfTI-1 magic "n+1\0"
    return gzip.compress(bytes(raw))


def _random_bytes(data: bytes) -> bytes:
    return np.random.default_rng(0).bytes(len(data))


def _header_only(data: bytes) -> bytes:
    return gzip.compress(gzip.decompress(data)[:352])


BROKEN_FILE_CASES = [
    ("truncated_half", _truncate_half),
    ("truncated_stream", _truncate_stream),
    ("bad_gzip_magic", _bad_gzip_magic),
    ("bad_magic", _bad_magic),
    ("random_bytes", _random_bytes),
    ("header_without_voxels", _header_only),
]


@pytest.mark.parametrize(
    ("name", "damage"), BROKEN_FILE_CASES, ids=[c[0] for c in BROKEN_FILE_CASES]
)
def test_broken_file(tmp_path, name, damage):
    path = write_nifti(small_phantom(), tmp_path / f"{name}.nii.gz", SPACING)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=rf"{name}\.nii\.gz: not a readable NIfTI file"):
        read_nifti(path)


def test_corrupt_voxels_caught_by_gzip_crc(tmp_path):
    path = write_nifti(small_phantom(), tmp_path / "bitrot.nii.gz", SPACING)
    data = path.read_bytes()
    raw = bytearray(gzip.decompress(data))
    raw[len(raw) // 2] ^= 0x55  # one damaged voxel
    damaged = gzip.compress(bytes(raw))
    # keep the original CRC32 (and size): the stream is valid deflate, the CRC says "damaged"
    path.write_bytes(damaged[:-8] + data[-8:])
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(path.read_bytes())
    with pytest.raises(DataError, match=r"bitrot\.nii\.gz: not a readable NIfTI file"):
        read_nifti(path)


def test_truncated_uncompressed(tmp_path):
    path = write_nifti(small_phantom(), tmp_path / "cut.nii", SPACING)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"cut\.nii: not a readable NIfTI file"):
        read_nifti(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.nii\.gz"):
        read_nifti(tmp_path / "nope.nii.gz")


def test_4d_singleton_is_squeezed(tmp_path):
    hu = small_phantom()
    stored = hu[::-1, ::-1, ::-1].transpose(2, 1, 0)[..., None]  # (x, y, z, 1), RAS+
    path = tmp_path / "single_t.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), np.diag([0.7, 0.8, 2.5, 1.0])), path)
    assert nib.load(path).shape == (SHAPE[2], SHAPE[1], SHAPE[0], 1)
    volume = read_nifti(path)
    np.testing.assert_array_equal(volume.hu, hu)


def test_true_4d_is_an_error(tmp_path):
    data = np.zeros((8, 9, 10, 2), dtype=np.int16)
    path = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(DataError, match=r"four_d\.nii\.gz: expected a 3D volume, .*2 volumes"):
        read_nifti(path)


@pytest.mark.parametrize(
    ("directions", "name"),
    [(RAS_STORAGE, "ras"), (CANONICAL_DIRECTIONS, "canonical"), (np.stack([Z, X, -Y]), "perm")],
    ids=["ras", "canonical", "permuted"],
)
def test_one_slice_volume_is_read_like_a_one_slice_dicom_series(tmp_path, directions, name):
    """One slice stays a ``(1, H, W)`` volume, whichever stored axis holds the slice."""
    hu = small_phantom()[4:5]
    path = write_nifti(hu, tmp_path / f"{name}.nii.gz", SPACING, directions=directions)
    assert 1 in nib.load(path).shape
    volume = read_nifti(path)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.spacing == pytest.approx(SPACING)
    assert volume.positions is not None and volume.positions.shape == (1,)


def test_one_slice_with_a_singleton_fourth_axis(tmp_path):
    hu = small_phantom()[:1]
    stored = hu[::-1, ::-1, ::-1].transpose(2, 1, 0)[..., None]  # (x, y, 1, 1), RAS+
    path = tmp_path / "one_t.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), np.diag([0.7, 0.8, 2.5, 1.0])), path)
    np.testing.assert_array_equal(read_nifti(path).hu, hu)


def test_2d_image_is_one_slice(tmp_path):
    """A NIfTI image with two dimensions has an implicit third of size one (``dim[3] = 1``)."""
    hu = small_phantom()[:1]
    stored = hu[0, ::-1, ::-1].T  # (x, y), RAS+
    path = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), np.diag([0.7, 0.8, 2.5, 1.0])), path)
    assert nib.load(path).ndim == 2
    volume = read_nifti(path)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.spacing == pytest.approx(SPACING)


def test_1d_is_an_error_saying_what_is_wrong(tmp_path):
    path = tmp_path / "line.nii"
    nib.save(nib.Nifti1Image(np.zeros((8,), dtype=np.int16), np.eye(4)), path)
    with pytest.raises(
        DataError, match=r"line\.nii: expected a 3D volume \(or one 2D slice\), .*shape \(8,\)"
    ):
        read_nifti(path)


def test_values_that_cannot_be_hu_are_refused(tmp_path):
    """A volume stored as HU + 1024 (air at +24, the body above +1000) is not HU."""
    path = write_nifti(
        (small_phantom() + 1024).astype(np.int16), tmp_path / "shifted.nii.gz", SPACING
    )
    with pytest.raises(DataError, match=r"shifted\.nii\.gz: .*not Hounsfield units"):
        read_nifti(path)


DEGENERATE_AFFINES = [
    ("zero_column", np.diag([1.0, 0.0, 1.0, 1.0])),
    ("parallel_axes", np.array([[1.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])),
]


@pytest.mark.parametrize(
    ("name", "affine"), DEGENERATE_AFFINES, ids=[c[0] for c in DEGENERATE_AFFINES]
)
def test_degenerate_affine(tmp_path, name, affine):
    path = tmp_path / f"{name}.nii"
    image = nib.Nifti1Image(np.zeros((8, 9, 10), dtype=np.int16), None)
    image.set_qform(None, code=0)  # nibabel cannot store a singular affine as a qform
    image.set_sform(affine, code=1)
    nib.save(image, path)
    np.testing.assert_allclose(nib.load(path).affine, affine)
    with pytest.raises(DataError, match=rf"{name}\.nii: "):
        read_nifti(path)


def test_write_nifti_rejects_degenerate_directions(tmp_path):
    with pytest.raises(ValueError, match="degenerate"):
        write_nifti(small_phantom(), tmp_path / "x.nii", SPACING, directions=np.stack([X, X, Z]))
