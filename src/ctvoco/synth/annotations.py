"""What a synthetic cohort writes beside its images: RSNA's image-level labels and organ masks.

RSNA 2023 ships ``image_level_labels.csv`` (the slices showing bowel injury or active
extravasation) and, for some training series, ``segmentations/<series_id>.nii``: an organ
label map in RSNA's codes (:data:`~ctvoco.io.masks.MASK_LABELS`). The cohort writes both
from the phantom's own label maps, so they are exact. The masks are stored along varying
axis directions (:data:`MASK_STORAGE`, with a transposed and a flipped one among them),
each with the affine that places it on its series, so reading them exercises the
reorientation of :func:`~ctvoco.io.masks.read_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctvoco.io.atomic import write_text_atomic
from ctvoco.io.masks import MASK_LABELS
from ctvoco.io.nifti import write_nifti
from ctvoco.synth.labels import INJURY_CODES
from ctvoco.synth.placement import Vec3, stored_origin
from ctvoco.synth.tissues import ORGAN_CODES

RSNA_ORGANS = {
    "liver": "liver",
    "spleen": "spleen",
    "kidney_left": "left_kidney",
    "kidney_right": "right_kidney",
    "bowel": "bowel",
}
"""The phantom's organ names (:data:`~ctvoco.synth.tissues.ORGAN_CODES`) and RSNA's."""

MASK_STORAGE: tuple[tuple[str, tuple[Vec3, Vec3, Vec3]], ...] = (
    ("RAS", ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))),
    ("LPI", ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0))),
    ("PLS", ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))),
    ("LAS", ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))),
)
"""How the masks are stored, one drawn per series: ``(name, directions)``, row ``a`` the LPS
direction of stored axis ``a`` (the names as for the FLARE volumes of the cohort)."""


def rsna_mask(organs: np.ndarray) -> np.ndarray:
    """RSNA's organ labels from a phantom's organ codes.

    Args:
        organs: ``(D, H, W)`` organ codes of a rendered phantom.

    Returns:
        ``(D, H, W)`` uint8: liver 1, spleen 2, left kidney 3, right kidney 4, bowel 5, else 0.
    """
    table = np.zeros(max(ORGAN_CODES.values()) + 1, dtype=np.uint8)
    for ours, theirs in RSNA_ORGANS.items():
        table[ORGAN_CODES[ours]] = MASK_LABELS[theirs]
    return table[organs]


def segmented(seed: int, patient_id: int, series_id: int, fraction: float) -> int | None:
    """Whether a series gets a mask, and which storage: an index of :data:`MASK_STORAGE`.

    Drawn from its own stream (the cohort's seed and the series' ids), so choosing the
    segmented series changes none of the cohort's other files.

    Returns:
        The storage index, or ``None`` for a series without a mask.
    """
    rng = np.random.default_rng([seed, patient_id, series_id, 5])
    chosen = rng.random() < fraction
    storage = int(rng.integers(len(MASK_STORAGE)))
    return storage if chosen else None


def write_segmentation(
    rsna_root: Path,
    series_id: int,
    organs: np.ndarray,
    spacing: Sequence[float],
    corner: Sequence[float],
    storage: int,
) -> Path:
    """Write ``<rsna_root>/segmentations/<series_id>.nii`` from a phantom's organ codes.

    Args:
        rsna_root: The RSNA tree.
        series_id: The series it belongs to.
        organs: ``(D, H, W)`` canonical organ codes of the series.
        spacing: The series' ``(dz, dy, dx)`` mm.
        corner: LPS position (mm) of canonical voxel ``(0, 0, 0)`` of the series.
        storage: Index of :data:`MASK_STORAGE`.
    """
    directions = np.asarray(MASK_STORAGE[storage][1])
    d, h, w = organs.shape
    spacing3 = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return write_nifti(
        rsna_mask(organs),
        rsna_root / "segmentations" / f"{series_id}.nii",
        spacing3,
        directions=directions,
        origin_lps=stored_origin(corner, (d, h, w), spacing3, directions),
    )


IMAGE_LEVEL_INJURIES = (("bowel", "Bowel"), ("extravasation", "Active_Extravasation"))
"""Targets with image-level labels and their ``injury_name`` in ``image_level_labels.csv``."""


def image_level_rows(
    patient_id: int, series_id: int, injuries: np.ndarray, instance_numbers: Sequence[int]
) -> list[dict[str, Any]]:
    """One ``image_level_labels.csv`` row per slice on which a bowel or extravasation lesion
    was drawn.

    Args:
        patient_id: The patient.
        series_id: The series.
        injuries: ``(D, H, W)`` injury codes of the rendered series (canonical order).
        instance_numbers: ``InstanceNumber`` of each canonical slice as written.
    """
    rows = []
    for target, name in IMAGE_LEVEL_INJURIES:
        shown = np.flatnonzero((injuries == INJURY_CODES[target]).any(axis=(1, 2)))
        rows += [
            {
                "patient_id": patient_id,
                "series_id": series_id,
                "instance_number": int(instance_numbers[k]),
                "injury_name": name,
            }
            for k in shown
        ]
    return rows


def write_image_level_labels(
    rsna_root: Path, patients: pd.DataFrame, rows: list[dict[str, Any]]
) -> None:
    """``image_level_labels.csv`` of the training patients (a header only when none)."""
    if patients.empty or not (patients["split"] == "train").any():
        return
    columns = ["patient_id", "series_id", "instance_number", "injury_name"]
    frame = pd.DataFrame(rows, columns=columns)
    write_text_atomic(rsna_root / "image_level_labels.csv", frame.to_csv(index=False))
