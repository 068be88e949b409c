"""Organ segmentation masks in RSNA 2023's format: reading, checking and aligning them.

RSNA 2023 ships voxel masks for a subset of the training series as
``segmentations/<series_id>.nii``: one label per voxel, liver 1, spleen 2, left kidney 3,
right kidney 4, bowel 5, 0 elsewhere (:data:`MASK_LABELS`). A mask is read like any NIfTI
image: its affine says how its stored axes lie in the patient, and it is turned to the
canonical orientation of :mod:`ctvoco.io.volume`, the orientation every CT series is read
in. It then lies voxel for voxel on the series it was drawn on: :func:`align_mask` checks
that it has the series' shape and that its slices lie where the series' slices lie.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from ctvoco.errors import DataError
from ctvoco.io.nifti import read_canonical
from ctvoco.io.volume import CTVolume

MASK_LABELS: Final[dict[str, int]] = {
    "liver": 1,
    "spleen": 2,
    "left_kidney": 3,
    "right_kidney": 4,
    "bowel": 5,
}
"""The organ of each label of an RSNA 2023 segmentation (0 is background)."""

MASK_SUFFIXES: Final = (".nii", ".nii.gz")

POSITION_TOLERANCE: Final = 0.5
"""Largest shift between a mask's slices and its series', in slice spacings, before a warning."""


@dataclass
class OrganMask:
    """An organ label map in canonical orientation.

    Attributes:
        labels: ``(D, H, W)`` uint8 labels (:data:`MASK_LABELS`).
        spacing: ``(z, y, x)`` voxel size in mm.
        positions: ``(D,)`` patient z (LPS, mm) of each slice, decreasing.
        source: The file it was read from.
        warnings: Problems that did not stop reading, one sentence each.
    """

    labels: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray
    source: str
    warnings: list[str] = field(default_factory=list)


def read_mask(path: str | os.PathLike[str]) -> OrganMask:
    """Read an organ mask and reorient it by its affine, like :func:`~ctvoco.io.read_nifti`.

    Args:
        path: ``.nii`` or ``.nii.gz`` label map.

    Returns:
        The canonical label map.

    Raises:
        DataError: The file cannot be read as one 3D image, holds values that are not whole
            numbers, or labels outside :data:`MASK_LABELS`; the message names the file.
    """
    image = read_canonical(path)
    values = image.array
    if not np.issubdtype(values.dtype, np.integer):
        whole = np.isfinite(values) & (values == np.round(values))
        if not whole.all():
            bad = values[~whole].ravel()[:3]
            raise DataError(
                f"{path}: a segmentation must hold whole-number labels; found {bad.tolist()}"
            )
    found = np.unique(values)
    unknown = [v for v in found.tolist() if v != 0 and v not in MASK_LABELS.values()]
    if unknown:
        known = ", ".join(f"{name} {code}" for name, code in MASK_LABELS.items())
        raise DataError(
            f"{path}: unknown label(s) {', '.join(f'{v:g}' for v in unknown[:5])}; "
            f"an RSNA segmentation holds 0 and {known}"
        )
    return OrganMask(
        labels=np.ascontiguousarray(values.astype(np.uint8)),
        spacing=image.spacing,
        positions=image.positions,
        source=str(path),
        warnings=list(image.warnings),
    )


def align_mask(mask: OrganMask, volume: CTVolume) -> tuple[np.ndarray, list[str]]:
    """The mask's labels on the voxels of ``volume``, after checking that they fit.

    Both are canonical already, so a mask of the same series has the same shape; its
    slices are then compared with the series' slice positions: a shift of more than
    :data:`POSITION_TOLERANCE` slice spacings is reported (the labels are still matched
    slice by slice, as the files were drawn on them).

    Args:
        mask: The series' mask (:func:`read_mask`).
        volume: The series.

    Returns:
        ``(labels, warnings)``: the ``(D, H, W)`` uint8 labels and what did not match.

    Raises:
        DataError: The shapes differ (the mask belongs to another series, or to a series
            read with other slices); the message names both.
    """
    if mask.labels.shape != volume.shape:
        raise DataError(
            f"{mask.source}: the segmentation is {_shape(mask.labels.shape)} voxels in "
            f"canonical orientation (slices x rows x columns), the series "
            f"{volume.source or volume.series_id} is {_shape(volume.shape)}; it was drawn on "
            "another series"
        )
    warnings = list(mask.warnings)
    if volume.positions is not None and len(volume.positions) == len(mask.positions) > 1:
        step = abs(float(volume.positions[0] - volume.positions[-1])) / (len(mask.positions) - 1)
        shift = float(np.max(np.abs(np.asarray(volume.positions) - mask.positions)))
        if step > 0 and shift > POSITION_TOLERANCE * step:
            warnings.append(
                f"{mask.source}: its slices lie up to {shift:.1f} mm from the series' slices "
                f"(z {mask.positions[0]:.1f} to {mask.positions[-1]:.1f} mm against "
                f"{volume.positions[0]:.1f} to {volume.positions[-1]:.1f} mm); matched slice by "
                "slice"
            )
    return mask.labels, warnings


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)
