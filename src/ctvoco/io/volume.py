"""``CTVolume`` and the canonical orientation every reader returns.

Canonical orientation (ALGORITHMS.md §1): an array ``(D, H, W)`` = (slices, rows, columns)
where slice 0 is the most cranial slice, row 0 is anterior and column 0 is the patient's
right. In DICOM's patient coordinate system LPS (x to the patient's Left, y Posterior,
z Superior) the three array axes therefore point to ``-z``, ``+y`` and ``+x``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CANONICAL_DIRECTIONS = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
"""Row ``a`` is the LPS direction in which array axis ``a`` of a canonical volume grows."""


@dataclass
class CTVolume:
    """A CT series as Hounsfield units in canonical orientation.

    Attributes:
        hu: ``(D, H, W)`` int16 or float32 Hounsfield units, canonical orientation.
        spacing: Voxel size ``(z, y, x)`` in millimetres.
        positions: ``(D,)`` position of each slice along the cranio-caudal axis in mm
            (patient z, so decreasing from slice 0 on), or ``None`` when unknown.
        patient_id: Patient identifier from the source, when present.
        series_id: Series identifier (DICOM SeriesInstanceUID or file stem).
        source: Where the volume was read from.
        warnings: Problems that did not stop reading (gaps, tilt, fallbacks), one sentence each.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray | None = None
    patient_id: str | None = None
    series_id: str | None = None
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"CTVolume.hu must be (D, H, W); got shape {self.hu.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(
                f"CTVolume.spacing must be three positive mm values; got {self.spacing}"
            )
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``."""
        return self.hu.shape  # type: ignore[return-value]


def canonical_transform(directions: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, ...]]:
    """How to transpose and flip an array whose axes point along ``directions`` to canonical.

    Args:
        directions: ``(3, 3)``; row ``a`` is the LPS unit direction of array axis ``a``.

    Returns:
        ``(order, flips)``: ``array.transpose(order)`` puts the axes in canonical order, then
        flipping axis ``c`` where ``flips[c]`` makes each point the canonical way.

    Raises:
        ValueError: Two array axes align with the same canonical axis (degenerate matrix).
    """
    directions = np.asarray(directions, dtype=float)
    if directions.shape != (3, 3) or np.any(np.linalg.norm(directions, axis=1) < 1e-6):
        raise ValueError(
            f"axis directions are degenerate (need three non-zero 3-vectors):\n{directions}"
        )
    alignment = directions @ CANONICAL_DIRECTIONS.T  # [array axis, canonical axis]
    order = [int(np.argmax(np.abs(alignment[:, c]))) for c in range(3)]
    if sorted(order) != [0, 1, 2]:
        raise ValueError(f"axis directions are degenerate, cannot orient:\n{directions}")
    flips = tuple(bool(alignment[order[c], c] < 0) for c in range(3))
    return (order[0], order[1], order[2]), flips


def to_canonical(
    array: np.ndarray, directions: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorient ``array`` (axes along ``directions``) to canonical; spacing follows the axes.

    Args:
        array: ``(A0, A1, A2)`` voxel array.
        directions: ``(3, 3)`` LPS unit direction of each array axis (rows).
        spacing: Voxel size along each array axis, mm.

    Returns:
        The C-contiguous canonical ``(D, H, W)`` array and its ``(z, y, x)`` spacing.
    """
    order, flips = canonical_transform(directions)
    out = array.transpose(order)
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=axis)
    new_spacing = (float(spacing[order[0]]), float(spacing[order[1]]), float(spacing[order[2]]))
    return np.ascontiguousarray(out), new_spacing
