"""AAST organ injury grades behind the phantom's low- and high-grade labels.

RSNA 2023 labels a solid-organ injury low grade (AAST grades I-III) or high grade (IV-V).
The phantom draws an AAST grade from the label, then sizes the injury by the grade's
imaging criteria of the 2018 AAST organ injury scale (Kozar et al., 2018): the depth of a
laceration below the capsule, the share of the organ's surface under a subcapsular
hematoma, and the share of the organ (for the liver: of the injured lobe) that is
disrupted or devascularised. docs/phantom.md gives the criteria and which numbers are
assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

GRADES_OF_LABEL: Final[dict[int, tuple[tuple[int, float], ...]]] = {
    1: ((1, 0.4), (2, 0.4), (3, 0.2)),
    2: ((4, 0.7), (5, 0.3)),
}
"""``label class -> ((AAST grade, probability), ...)``; the probabilities are assumptions."""


@dataclass(frozen=True)
class GradeShape:
    """How large an injury of one AAST grade is.

    Attributes:
        laceration_depth: Depth range (mm) of a laceration below the capsule, or None for a
            grade without one.
        lacerations: Inclusive range of the number of lacerations.
        subcapsular_share: Range of the share of the organ surface under a subcapsular
            hematoma, or None.
        disrupted_share: Range of the share of the organ (liver: of its lobe) that is
            disrupted, or None for a grade without parenchymal disruption.
    """

    laceration_depth: tuple[float, float] | None
    lacerations: tuple[int, int]
    subcapsular_share: tuple[float, float] | None
    disrupted_share: tuple[float, float] | None


_LIVER_SPLEEN_LOW: Final = {
    1: GradeShape((4.0, 9.5), (1, 1), (0.03, 0.09), None),
    2: GradeShape((10.5, 29.5), (1, 2), (0.11, 0.45), None),
    3: GradeShape((31.0, 45.0), (1, 2), (0.52, 0.7), None),
}

GRADE_SHAPES: Final[dict[str, dict[int, GradeShape]]] = {
    "liver": {
        **_LIVER_SPLEEN_LOW,
        4: GradeShape((31.0, 50.0), (2, 3), None, (0.26, 0.74)),
        5: GradeShape((31.0, 50.0), (2, 3), None, (0.76, 0.9)),
    },
    "spleen": {
        **_LIVER_SPLEEN_LOW,
        4: GradeShape((31.0, 45.0), (2, 3), None, (0.26, 0.5)),
        5: GradeShape((31.0, 45.0), (2, 3), None, (0.6, 0.9)),
    },
    "kidney": {
        1: GradeShape(None, (0, 0), (0.05, 0.2), None),
        2: GradeShape((4.0, 9.5), (1, 1), (0.05, 0.2), None),
        3: GradeShape((10.5, 22.0), (1, 2), (0.1, 0.3), None),
        4: GradeShape((20.0, 30.0), (2, 3), None, (0.2, 0.4)),
        5: GradeShape((20.0, 30.0), (2, 3), None, (0.6, 0.9)),
    },
}
"""``organ kind -> AAST grade -> GradeShape``.

Liver and spleen: grade I lacerations are under 1 cm deep and subcapsular hematomas cover
under 10 % of the surface, grade II 1-3 cm and 10-50 %, grade III over 3 cm and over
50 %; grade IV disrupts 25-75 % of a hepatic lobe (spleen: devascularises over 25 %),
grade V more (a shattered organ). Kidney: grade I is a subcapsular hematoma or contusion
without laceration, grade II a laceration at most 1 cm deep, grade III deeper than 1 cm,
grade IV reaches the collecting system, grade V shatters the kidney.
"""

CLOT_HU: Final = (45.0, 70.0)
"""HU range of clotted blood (the sentinel clot next to the bleeding organ)."""

UNCLOTTED_HU: Final = (30.0, 45.0)
"""HU range of unclotted blood filling a laceration."""

CLOT_CONTRAST_HU: Final = 25.0
"""A clot or laceration is at least this much darker than the enhanced parenchyma."""

EXTRAVASATION_FACTOR: Final = (0.9, 1.1)
"""Active extravasation attenuates like the series' aortic blood, within this factor."""


def organ_kind(organ: str) -> str:
    """``liver``, ``spleen`` or ``kidney`` (for ``kidney_right`` / ``kidney_left``)."""
    return "kidney" if organ.startswith("kidney") else organ


def draw_grade(label: int, rng: np.random.Generator) -> int:
    """An AAST grade for a label class (1 low, 2 high) with :data:`GRADES_OF_LABEL`."""
    if label not in GRADES_OF_LABEL:
        raise ValueError(f"an injured organ's label is 1 (low) or 2 (high), not {label}")
    grades, weights = zip(*GRADES_OF_LABEL[label], strict=True)
    return int(rng.choice(grades, p=np.asarray(weights) / sum(weights)))


def below_parenchyma(hu: float, parenchyma_hu: float) -> float:
    """``hu``, lowered where needed to stay :data:`CLOT_CONTRAST_HU` below the parenchyma."""
    return min(hu, parenchyma_hu - CLOT_CONTRAST_HU)


def cap_radius(share: float, half_axes: tuple[float, float, float]) -> float:
    """Chord radius (mm) of a cap covering ``share`` of an ellipsoid's surface.

    A spherical cap of chord radius ``r`` has area ``pi r**2`` (Archimedes), so
    ``r = sqrt(share * S / pi)`` with ``S`` the surface area (Thomsen's approximation,
    within about 1 %).

    Args:
        share: Share of the surface, in ``(0, 1)``.
        half_axes: The ellipsoid's half axes (mm).

    Returns:
        The radius (mm) around a surface point.
    """
    a, b, c = half_axes
    p = 1.6075
    area = 4.0 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3.0) ** (1.0 / p)
    return float(np.sqrt(share * area / np.pi))
