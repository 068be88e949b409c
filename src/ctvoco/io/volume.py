"""``CTVolume`` and the canonical orientation every reader returns.

Canonical orientation (docs/algorithms.md): an array ``(D, H, W)`` = (slices, rows, columns)
where slice 0 is the most cranial slice, row 0 is anterior and column 0 is the patient's
right. In DICOM's patient coordinate system LPS (x to the patient's Left, y Posterior,
z Superior) the three array axes therefore point to ``-z``, ``+y`` and ``+x``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctvoco.errors import DataError

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
        instance_numbers: DICOM ``InstanceNumber`` of each slice in array order (``None`` for
            a slice without one), or ``None`` when the source has none (NIfTI, arrays).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray | None = None
    patient_id: str | None = None
    series_id: str | None = None
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    instance_numbers: tuple[int | None, ...] | None = None

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


MAX_BODY_MEDIAN_HU = 500.0
"""Above this median the body of a volume cannot be in HU (soft tissue is about 0-100 HU)."""

MIN_BODY_FRACTION = 0.2
"""Share of the voxels the body must cover for its median to judge the volume."""

FOREGROUND_ABOVE_BACKGROUND_HU = 500.0
"""The body: voxels this far above the background (the darkest 1 %: air or padding)."""

_SAMPLE_VOXELS = 1 << 21


def check_hounsfield(hu: np.ndarray, source: str, hint: str = "") -> None:
    """Refuse a volume whose values cannot be Hounsfield units.

    In HU, air is -1000 and the body is mostly fat, water and soft tissue (-100 to 100), so
    the median of a CT volume and the median of its body stay far below
    :data:`MAX_BODY_MEDIAN_HU` however much bone or contrast it holds. Values stored as
    HU + 1024 and read without their rescale intercept put air near +24 and the body near
    +1050. The body is taken as the voxels more than :data:`FOREGROUND_ABOVE_BACKGROUND_HU`
    above the darkest 1 % of the volume; its median counts when it covers at least
    :data:`MIN_BODY_FRACTION` of the volume (in a tightly cropped scan without air, the voxels
    above fat are only bone). Large volumes are judged on a regular sample of voxels.

    Args:
        hu: ``(D, H, W)`` values that should be HU.
        source: The file or series, named in the error.
        hint: What probably went wrong, appended to the message.

    Raises:
        DataError: The volume's median, or its body's, is above :data:`MAX_BODY_MEDIAN_HU`.
    """
    sample = _sample(hu).astype(np.float32, copy=False)
    if sample.size == 0:
        return
    overall = float(np.median(sample))
    background = float(np.percentile(sample, 1))
    body = sample[sample > background + FOREGROUND_ABOVE_BACKGROUND_HU]
    body_median = float(np.median(body)) if body.size >= MIN_BODY_FRACTION * sample.size else None
    if overall <= MAX_BODY_MEDIAN_HU and (body_median is None or body_median <= MAX_BODY_MEDIAN_HU):
        return
    found = (
        f"the median of the volume is {overall:.0f}"
        if overall > MAX_BODY_MEDIAN_HU
        else f"the median of the body is {body_median:.0f}"
    )
    raise DataError(
        f"{source}: values are not Hounsfield units: {found}, above "
        f"{MAX_BODY_MEDIAN_HU:.0f} (air is -1000 HU, soft tissue about 40 HU)"
        + (f"; {hint}" if hint else "")
    )


def _sample(hu: np.ndarray) -> np.ndarray:
    """A regular sample of at most about :data:`_SAMPLE_VOXELS` voxels of ``hu``."""
    step = max(1, int(np.ceil(np.sqrt(hu.size / _SAMPLE_VOXELS))))
    return hu[:, ::step, ::step] if hu.ndim == 3 else hu
