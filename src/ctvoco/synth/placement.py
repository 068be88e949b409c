"""Where a phantom's voxels lie in the patient frame (LPS millimetres), for the writers that
store it with a position: DICOM slices, NIfTI volumes and masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctvoco.io.volume import CANONICAL_DIRECTIONS, canonical_transform

Vec3 = tuple[float, float, float]


def first_voxel_lps(
    shape: tuple[int, int, int],
    spacing: Sequence[float],
    z_offset_mm: float,
    shift: Sequence[float] = (0.0, 0.0, 0.0),
) -> Vec3:
    """Patient position (LPS, mm) of the centre of canonical voxel ``(0, 0, 0)`` of a phantom.

    The phantom puts voxel ``(k, i, j)`` at ``x = (j + 0.5 - W / 2) dx``, ``y = (i + 0.5 - H /
    2) dy`` and ``z_offset_mm + (k + 0.5) dz`` towards the feet, i.e. LPS ``z = -(z_offset_mm
    + (k + 0.5) dz)``; ``shift`` moves the whole volume.

    Args:
        shape: Canonical ``(D, H, W)``.
        spacing: ``(dz, dy, dx)`` mm.
        z_offset_mm: The phantom's ``z_offset_mm``.
        shift: Added LPS ``(x, y, z)`` mm.
    """
    _, h, w = shape
    dz, dy, dx = (float(v) for v in spacing)
    return (
        (0.5 - w / 2) * dx + float(shift[0]),
        (0.5 - h / 2) * dy + float(shift[1]),
        -(z_offset_mm + 0.5 * dz) + float(shift[2]),
    )


def stored_origin(
    corner: Sequence[float],
    shape: tuple[int, int, int],
    spacing: Sequence[float],
    directions: np.ndarray,
) -> Vec3:
    """LPS position of the first *stored* voxel of a canonical volume stored along ``directions``.

    Args:
        corner: LPS position of canonical voxel ``(0, 0, 0)``.
        shape: Canonical ``(D, H, W)``.
        spacing: Canonical ``(dz, dy, dx)`` mm.
        directions: ``(3, 3)``; row ``a`` is the LPS direction of stored axis ``a``.

    Returns:
        The patient position of the voxel that a stored axis flipped against the canonical
        one starts from: the far end of that canonical axis.
    """
    _, flips = canonical_transform(directions)
    origin = np.asarray(corner, dtype=float)
    for axis, flipped in enumerate(flips):
        if flipped:
            origin = origin + (shape[axis] - 1) * float(spacing[axis]) * CANONICAL_DIRECTIONS[axis]
    return (float(origin[0]), float(origin[1]), float(origin[2]))
