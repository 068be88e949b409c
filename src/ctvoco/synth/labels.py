"""The five RSNA targets of a synthetic patient: labels, their prevalence and their codes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from ctvoco.labels import TARGET_CLASSES, TARGETS, target_columns

INJURY_CODES: Final[dict[str, int]] = {target: i + 1 for i, target in enumerate(TARGETS)}
"""Codes of the ``injuries`` label map: ``1 + TARGETS.index(target)``; 0 is no injury."""

DEFAULT_PREVALENCE: Final[dict[str, tuple[float, ...]]] = {
    "bowel": (0.75, 0.25),
    "extravasation": (0.75, 0.25),
    "kidney": (0.6, 0.2, 0.2),
    "liver": (0.6, 0.2, 0.2),
    "spleen": (0.6, 0.2, 0.2),
}
"""Class probabilities per target for a synthetic cohort, in ``TARGET_CLASSES`` order.

Far above RSNA's real prevalence (bowel 2%, extravasation 6%, kidney 3.7/2.1%, liver 8/2%,
spleen 6/5%) so that a cohort of a few dozen patients has positives to learn from.
"""


@dataclass(frozen=True)
class InjuryLabels:
    """The five RSNA targets of one patient.

    Attributes:
        bowel: 0 healthy, 1 injury.
        extravasation: 0 healthy, 1 injury.
        kidney: 0 healthy, 1 low grade, 2 high grade.
        liver: 0 healthy, 1 low grade, 2 high grade.
        spleen: 0 healthy, 1 low grade, 2 high grade.
    """

    bowel: int = 0
    extravasation: int = 0
    kidney: int = 0
    liver: int = 0
    spleen: int = 0

    def __post_init__(self) -> None:
        for target in TARGETS:
            value = getattr(self, target)
            n_classes = len(TARGET_CLASSES[target])
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{target} must be an int; got {type(value).__name__}")
            if not 0 <= int(value) < n_classes:
                raise ValueError(f"{target} must be in [0, {n_classes - 1}]; got {value}")
            object.__setattr__(self, target, int(value))

    @classmethod
    def from_classes(cls, classes: Sequence[int]) -> InjuryLabels:
        """Labels from class indices in ``schema.TARGETS`` order."""
        if len(classes) != len(TARGETS):
            raise ValueError(f"expected {len(TARGETS)} class indices; got {len(classes)}")
        return cls(**dict(zip(TARGETS, classes, strict=True)))

    @classmethod
    def from_row(cls, row: Mapping[str, int]) -> InjuryLabels:
        """Labels from a ``train.csv``-style row of one-hot columns."""
        classes = []
        for target in TARGETS:
            hot = [int(row[column]) for column in target_columns(target)]
            if sorted(hot) != [0] * (len(hot) - 1) + [1]:
                raise ValueError(f"{target} columns are not one-hot: {hot}")
            classes.append(hot.index(1))
        return cls.from_classes(classes)

    @property
    def any_injury(self) -> bool:
        """Whether any target is not healthy."""
        return any(self.as_classes())

    def as_classes(self) -> tuple[int, ...]:
        """Class indices in ``schema.TARGETS`` order."""
        return tuple(getattr(self, target) for target in TARGETS)

    def to_row(self) -> dict[str, int]:
        """The 13 one-hot columns and ``any_injury``, named and ordered as in ``train.csv``."""
        row: dict[str, int] = {}
        for target, cls_index in zip(TARGETS, self.as_classes(), strict=True):
            for i, column in enumerate(target_columns(target)):
                row[column] = int(i == cls_index)
        row["any_injury"] = int(self.any_injury)
        return row


def draw_injury_labels(
    rng: np.random.Generator,
    prevalence: Mapping[str, Sequence[float]] = DEFAULT_PREVALENCE,
) -> InjuryLabels:
    """Draw the five targets independently.

    Args:
        rng: Random generator.
        prevalence: Class probabilities per target, in ``schema.TARGET_CLASSES`` order.

    Returns:
        The drawn labels.

    Raises:
        ValueError: If a target is missing or its probabilities are invalid.
    """
    check_prevalence(prevalence)
    return InjuryLabels(
        **{t: int(rng.choice(len(prevalence[t]), p=np.asarray(prevalence[t]))) for t in TARGETS}
    )


def check_prevalence(prevalence: Mapping[str, Sequence[float]]) -> None:
    """Raise ValueError unless every target has valid class probabilities."""
    unknown = set(prevalence) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown targets in prevalence: {sorted(unknown)}")
    for target in TARGETS:
        if target not in prevalence:
            raise ValueError(f"prevalence lacks target {target!r}")
        p = np.asarray(prevalence[target], dtype=float)
        n_classes = len(TARGET_CLASSES[target])
        if p.shape != (n_classes,) or (p < 0).any() or not math.isclose(p.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(
                f"prevalence[{target!r}] must be {n_classes} non-negative probabilities "
                f"summing to 1; got {prevalence[target]}"
            )
