"""The RSNA 2023 Abdominal Trauma Detection label schema, shared by data, losses and metrics.

One name per concept: a *target* is one of the five injury groups (``bowel``,
``extravasation``, ``kidney``, ``liver``, ``spleen``); its *classes* are the one-hot
columns of ``train.csv``; ``any_injury`` is derived from the five targets.
"""

from __future__ import annotations

from typing import Final

TARGET_CLASSES: Final[dict[str, tuple[str, ...]]] = {
    "bowel": ("healthy", "injury"),
    "extravasation": ("healthy", "injury"),
    "kidney": ("healthy", "low", "high"),
    "liver": ("healthy", "low", "high"),
    "spleen": ("healthy", "low", "high"),
}
"""Each target and its classes, in ``train.csv`` column order."""

TARGETS: Final[tuple[str, ...]] = tuple(TARGET_CLASSES)
BINARY_TARGETS: Final[tuple[str, ...]] = ("bowel", "extravasation")
ORGAN_TARGETS: Final[tuple[str, ...]] = ("kidney", "liver", "spleen")

PREDICTION_COLUMNS: Final[tuple[str, ...]] = tuple(
    f"{target}_{cls}" for target, classes in TARGET_CLASSES.items() for cls in classes
)
"""The 13 probability columns of ``sample_submission.csv``, in order."""

LABEL_COLUMNS: Final[tuple[str, ...]] = (*PREDICTION_COLUMNS, "any_injury")
"""The label columns of ``train.csv`` after ``patient_id``."""

CLASS_WEIGHTS: Final[dict[str, tuple[float, ...]]] = {
    "bowel": (1.0, 2.0),
    "extravasation": (1.0, 6.0),
    "kidney": (1.0, 2.0, 4.0),
    "liver": (1.0, 2.0, 4.0),
    "spleen": (1.0, 2.0, 4.0),
    "any_injury": (1.0, 6.0),
}
"""Competition sample weights by true class (healthy, low/injury, high)."""

SCORE_COLUMNS: Final[tuple[str, ...]] = (*TARGETS, "any_injury")
"""The six losses that the competition score averages."""


def target_columns(target: str) -> list[str]:
    """The one-hot columns of one target, e.g. ``kidney`` -> ``kidney_healthy, kidney_low, ...``."""
    try:
        return [f"{target}_{cls}" for cls in TARGET_CLASSES[target]]
    except KeyError:
        raise ValueError(
            f"unknown target {target!r}; expected one of {', '.join(TARGETS)}"
        ) from None
