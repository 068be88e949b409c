"""Read NIfTI CT volumes (FLARE23) into canonical :class:`~ctvoco.io.volume.CTVolume`, and
write canonical arrays as NIfTI."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ctvoco.errors import DataError
from ctvoco.io.volume import CTVolume, canonical_transform, check_hounsfield, to_canonical

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def nifti_case_id(path: str | os.PathLike[str]) -> str:
    """``FLARE23_0001`` for ``.../FLARE23_0001_0000.nii.gz`` (the nnU-Net channel suffix drops)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem, _, channel = name.rpartition("_")
    return stem if stem and channel.isdigit() and len(channel) == 4 else name


def read_nifti(path: str | os.PathLike[str]) -> CTVolume:
    """Read a NIfTI CT volume and reorient it by its affine to the canonical orientation.

    The affine maps voxel indices to RAS millimetres; it is converted to LPS and each
    voxel axis is matched to the canonical axis it points along (any permutation and flip),
    so a file with a flipped or permuted affine reads back as the same canonical array.

    A volume of one slice reads as ``(1, H, W)``, like a DICOM series of one file; so does
    an image stored with two dimensions (NIfTI's ``dim[3]`` is then 1).

    Args:
        path: ``.nii`` or ``.nii.gz`` file holding one 3D CT volume in HU.

    Returns:
        The volume (int16 kept as int16, other types as float32), spacing in mm.

    Raises:
        DataError: The file is missing, unreadable, not one 3D volume, has a degenerate
            affine, or holds values that cannot be HU.
    """
    path = Path(path)
    image = read_canonical(path)
    hu = image.array if image.array.dtype == np.int16 else image.array.astype(np.float32)
    check_hounsfield(hu, str(path), "the file's values (or its scl_slope/scl_inter) are not HU")
    return CTVolume(
        hu=hu,
        spacing=image.spacing,
        positions=image.positions,
        series_id=nifti_case_id(path),
        source=str(path),
        warnings=image.warnings,
    )


@dataclass
class CanonicalImage:
    """The voxels of a NIfTI file in canonical orientation, before any check of their values.

    Attributes:
        array: ``(D, H, W)`` canonical array, the file's dtype after scaling.
        spacing: ``(z, y, x)`` voxel size in mm.
        positions: ``(D,)`` patient z (LPS, mm) of each slice, decreasing.
        warnings: Problems that did not stop reading (an oblique affine).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray
    warnings: list[str] = field(default_factory=list)


def read_canonical(path: str | os.PathLike[str]) -> CanonicalImage:
    """Read one 3D NIfTI image and reorient it by its affine (see :func:`read_nifti`).

    Raises:
        DataError: The file is missing, unreadable, not one 3D volume or has a degenerate
            affine.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            # Decompress fully so the gzip CRC is verified (nibabel stops at the last voxel).
            image = nib.Nifti1Image.from_bytes(gzip.decompress(path.read_bytes()))
        else:
            image = nib.load(path)
        affine = np.asarray(image.affine, dtype=float)
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for broken headers and gzip streams
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    data = _as_3d(path, data)
    linear = RAS_TO_LPS @ affine[:3, :3]
    spacing = np.round(np.linalg.norm(linear, axis=0), 6)
    if not np.all(np.isfinite(linear)) or np.any(spacing <= 0):
        raise DataError(f"{path}: the affine is degenerate:\n{affine}")
    directions = (linear / spacing).T  # row a = LPS direction of voxel axis a
    try:
        array, canonical_spacing = to_canonical(data, directions, tuple(spacing))
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from exc
    origin_z = float((RAS_TO_LPS @ affine[:3, 3])[2])
    warnings = []
    if np.abs(directions).max(axis=1).min() < 0.99:
        warnings.append(f"{path}: oblique affine; axes were matched to the nearest canonical axis")
    positions = _slice_positions(linear, affine, data.shape, array.shape[0], origin_z)
    return CanonicalImage(array, canonical_spacing, positions, warnings)


def _as_3d(path: Path, data: np.ndarray) -> np.ndarray:
    """The three spatial axes of the stored array (each may have size 1).

    Axes after the third must all have size 1 (a single time point); a 2D image gets its
    implicit third axis of size 1.

    Raises:
        DataError: The file holds several volumes, or fewer than two dimensions.
    """
    if data.ndim == 2:
        return data[:, :, np.newaxis]
    if data.ndim < 2:
        raise DataError(
            f"{path}: expected a 3D volume (or one 2D slice), got an array of shape {data.shape}"
        )
    extra = data.shape[3:]
    if any(n != 1 for n in extra):
        raise DataError(
            f"{path}: expected a 3D volume, got shape {data.shape}: "
            f"{int(np.prod(extra))} volumes along the axes after the third"
        )
    return data.reshape(data.shape[:3])


def _slice_positions(
    linear: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], depth: int, origin_z: float
) -> np.ndarray:
    """Patient-z (LPS, mm) of each canonical slice: the z of its voxel centres, decreasing."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    z = (linear @ corners)[2] + origin_z
    return np.linspace(z.max(), z.min(), depth)


RAS_STORAGE = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
"""LPS directions of the stored axes of an RAS+ NIfTI file (x to the right, y anterior, z up)."""


def write_nifti(
    hu: np.ndarray,
    path: str | os.PathLike[str],
    spacing: tuple[float, float, float],
    *,
    directions: np.ndarray = RAS_STORAGE,
    origin_lps: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Path:
    """Write a canonical ``(D, H, W)`` HU volume as NIfTI, stored along ``directions``.

    The inverse of :func:`read_nifti`: whatever storage ``directions`` (any permutation and
    flips of the patient axes), reading the file back gives the same canonical array.

    Args:
        hu: ``(D, H, W)`` canonical volume (int16 is kept as int16).
        path: Output ``.nii`` or ``.nii.gz`` file.
        spacing: Canonical ``(z, y, x)`` voxel size in mm.
        directions: ``(3, 3)``; row ``a`` is the LPS direction of stored axis ``a``.
        origin_lps: Patient position (LPS, mm) of the first stored voxel.
    """
    directions = np.asarray(directions, dtype=float)
    order, flips = canonical_transform(directions)
    flipped = hu
    for axis, flip in enumerate(flips):
        if flip:
            flipped = np.flip(flipped, axis=axis)
    stored = np.ascontiguousarray(flipped.transpose(np.argsort(order)))
    stored_spacing = np.empty(3)
    for c, a in enumerate(order):
        stored_spacing[a] = spacing[c]
    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS @ (directions.T * stored_spacing)
    affine[:3, 3] = RAS_TO_LPS @ np.asarray(origin_lps, dtype=float)
    image = nib.Nifti1Image(stored, affine)
    image.header.set_xyzt_units("mm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path
