"""The RSNA 2023 Abdominal Trauma Detection labels: their schema and their codec.

Shared by data, losses, metrics and reports. One name per concept: a *target* is one of the
five injury groups (``bowel``, ``extravasation``, ``kidney``, ``liver``, ``spleen``); its
*classes* are the one-hot columns of ``train.csv``; ``any_injury`` is derived from the five
targets.

The codec turns label and prediction tables into arrays and back: it validates
``train.csv``-like frames (:func:`validated_labels`), converts between one-hot columns and
integer classes (:func:`classes_from_labels`, :func:`labels_from_classes`), reduces several
prediction rows per patient to one (:func:`aggregate_predictions`) and builds the prevalence
baseline (:func:`prevalence_predictions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import pandas as pd

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


AGGREGATIONS: Final[tuple[str, ...]] = ("max", "mean")
"""The allowed per-patient aggregations of several prediction rows."""

PATIENT_ID: Final[str] = "patient_id"
"""The id column of label and prediction tables."""
_MAX_IDS_SHOWN: Final[int] = 5


def _group_slices() -> dict[str, slice]:
    """Column slice of each target inside the 13 prediction columns."""
    slices: dict[str, slice] = {}
    start = 0
    for target in TARGETS:
        stop = start + len(TARGET_CLASSES[target])
        slices[target] = slice(start, stop)
        start = stop
    return slices


TARGET_SLICES: Final[dict[str, slice]] = _group_slices()
"""Column slice of each target among the 13 prediction columns."""
HEALTHY_COLUMNS: Final[np.ndarray] = np.array([TARGET_SLICES[t].start for t in TARGETS])
"""Index of each target's ``*_healthy`` column among the 13 prediction columns."""


# --------------------------------------------------------------------------- validation


def format_ids(ids: Iterable[object]) -> str:
    """Up to five distinct ids, comma separated, with a count of the rest."""
    unique = list(dict.fromkeys(ids))
    shown = ", ".join(str(i) for i in unique[:_MAX_IDS_SHOWN])
    rest = len(unique) - _MAX_IDS_SHOWN
    return f"{shown} (and {rest} more)" if rest > 0 else shown


def check_aggregate(how: str) -> None:
    """Refuse an aggregation that is not one of :data:`AGGREGATIONS`.

    Raises:
        ValueError: Naming the value and the allowed ones.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregate {how!r}; expected one of {', '.join(AGGREGATIONS)}")


def _check_frame(frame: object, what: str) -> pd.DataFrame:
    """Check that ``frame`` is a non-empty DataFrame with ``patient_id`` and the 13 columns."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in (PATIENT_ID, *PREDICTION_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing {len(missing)} column(s): {', '.join(missing)}")
    if len(frame) == 0:
        raise ValueError(f"{what} has no rows")
    n_missing_ids = int(frame[PATIENT_ID].isna().sum())
    if n_missing_ids:
        raise ValueError(f"{what} has {n_missing_ids} row(s) with a missing {PATIENT_ID}")
    return frame


def _float_block(frame: pd.DataFrame, what: str) -> np.ndarray:
    """The 13 class columns of ``frame`` as float64, shape ``(N, 13)``."""
    columns = []
    for name in PREDICTION_COLUMNS:
        try:
            columns.append(frame[name].to_numpy(dtype=np.float64, na_value=np.nan))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what} column {name!r} is not numeric") from err
    return np.stack(columns, axis=1)


def _raise_on_mask(mask: np.ndarray, ids: np.ndarray, problem: str) -> None:
    """Raise naming the first offending column and its patients if ``mask`` (N, 13) has a hit."""
    if not mask.any():
        return
    col = int(np.flatnonzero(mask.any(axis=0))[0])
    rows = np.flatnonzero(mask[:, col])
    raise ValueError(
        f"predictions contain {problem} in column {PREDICTION_COLUMNS[col]!r} for "
        f"{rows.size} row(s), patient(s) {format_ids(ids[rows])}"
    )


def validated_labels(labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Validate a ``train.csv``-like frame.

    Args:
        labels: ``patient_id`` + the 13 one-hot columns; other columns are ignored.

    Returns:
        ``(ids, onehot)``: patient ids, shape ``(N,)``, and the one-hot matrix as float64,
        shape ``(N, 13)``, both in the row order of ``labels``.

    Raises:
        ValueError: missing columns, duplicated patients, or a group that is not one-hot.
    """
    _check_frame(labels, "labels")
    ids = labels[PATIENT_ID].to_numpy()
    duplicated = labels[PATIENT_ID].duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise ValueError(
            f"labels have {int(duplicated.sum())} rows with a duplicated {PATIENT_ID}: "
            f"{format_ids(ids[duplicated])}"
        )
    onehot = _float_block(labels, "labels")
    for target, cols in TARGET_SLICES.items():
        block = onehot[:, cols]
        ok = np.isin(block, (0.0, 1.0)).all(axis=1) & (block.sum(axis=1) == 1.0)
        if not ok.all():
            raise ValueError(
                f"labels are not one-hot in group {target!r} ({', '.join(target_columns(target))}) "
                f"for {int((~ok).sum())} patient(s): {format_ids(ids[~ok])}"
            )
    return ids, onehot


# --------------------------------------------------------------------------- frames


def aggregate_predictions(predictions: pd.DataFrame, how: str = "max") -> pd.DataFrame:
    """Reduce several prediction rows per patient (e.g. one per CT series) to one.

    Args:
        predictions: ``patient_id`` and the 13 probability columns, shape ``(M, >=14)``;
            other columns are dropped.
        how: ``"max"`` or ``"mean"``, applied per column.

    Returns:
        One row per patient, sorted by ``patient_id``, with columns ``patient_id`` and the
        13 probability columns as float64, shape ``(N, 14)``. Groups are not normalised.

    Raises:
        ValueError: on an unknown ``how``, missing columns, non-numeric, NaN, infinite or
            negative probabilities (naming the column and patients).
    """
    check_aggregate(how)
    _check_frame(predictions, "predictions")
    ids = predictions[PATIENT_ID].to_numpy()
    values = _float_block(predictions, "predictions")
    _raise_on_mask(np.isnan(values), ids, "NaN")
    _raise_on_mask(np.isinf(values), ids, "infinite values")
    _raise_on_mask(values < 0.0, ids, "negative probabilities")

    frame = pd.DataFrame(values, columns=list(PREDICTION_COLUMNS))
    frame.insert(0, PATIENT_ID, ids)
    return frame.groupby(PATIENT_ID, sort=True)[list(PREDICTION_COLUMNS)].agg(how).reset_index()


def prevalence_predictions(labels: pd.DataFrame, patient_ids: Iterable[object]) -> pd.DataFrame:
    """The prevalence baseline: every patient gets the training prevalence of each class.

    Args:
        labels: the training labels, as for :func:`rsna_score`, shape ``(N, >=14)``.
        patient_ids: the patients to predict for, length ``P``.

    Returns:
        ``patient_id`` and the 13 columns holding the column means of the one-hot labels
        (each group sums to 1), shape ``(P, 14)``, in the order of ``patient_ids``.

    Raises:
        ValueError: if ``labels`` are invalid or ``patient_ids`` is empty.
    """
    _, onehot = validated_labels(labels)
    ids = list(patient_ids)
    if not ids:
        raise ValueError("patient_ids is empty")
    prevalence = onehot.mean(axis=0)
    frame = pd.DataFrame(np.tile(prevalence, (len(ids), 1)), columns=list(PREDICTION_COLUMNS))
    frame.insert(0, PATIENT_ID, ids)
    return frame


def _is_integral(values: np.ndarray) -> bool:
    """Whether ``values`` are integers (or booleans, or floats with integral values)."""
    if np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_):
        return True
    return bool(
        np.issubdtype(values.dtype, np.floating)
        and np.isfinite(values).all()
        and np.all(values == np.round(values))
    )


def labels_from_classes(patient_ids: Sequence[object], classes: np.ndarray) -> pd.DataFrame:
    """Build a ``train.csv``-like label frame from integer classes.

    Args:
        patient_ids: one id per row, length ``N``.
        classes: class index per target in :data:`TARGETS` order
            (0 = healthy, 1 = injury / low, 2 = high), integer array of shape ``(N, 5)``.

    Returns:
        ``patient_id``, the 13 one-hot columns and ``any_injury`` (int64), shape ``(N, 15)``.

    Raises:
        ValueError: on a wrong shape, non-integer values, or a class out of range for its
            target (naming the target and patients).
    """
    ids = np.asarray(list(patient_ids), dtype=object)
    values = np.asarray(classes)
    if values.shape != (ids.size, len(TARGETS)):
        raise ValueError(
            f"classes must have shape ({ids.size}, {len(TARGETS)}) for {ids.size} patients, "
            f"got {values.shape}"
        )
    if not _is_integral(values):
        raise ValueError(f"classes must be integers, got dtype {values.dtype}")
    values = values.astype(np.int64)

    blocks = []
    for k, target in enumerate(TARGETS):
        n_classes = len(TARGET_CLASSES[target])
        column = values[:, k]
        bad = (column < 0) | (column >= n_classes)
        if bad.any():
            raise ValueError(
                f"class of target {target!r} must be in [0, {n_classes - 1}] but is "
                f"{format_ids(column[bad])} for patient(s) {format_ids(ids[bad])}"
            )
        blocks.append(np.eye(n_classes, dtype=np.int64)[column])
    onehot = np.concatenate(blocks, axis=1)
    any_injury = (values > 0).any(axis=1).astype(np.int64)

    frame = pd.DataFrame(np.column_stack([onehot, any_injury]), columns=list(LABEL_COLUMNS))
    frame.insert(0, PATIENT_ID, list(ids))
    return frame


def classes_from_labels(labels: pd.DataFrame) -> np.ndarray:
    """Integer classes from a ``train.csv``-like frame (inverse of :func:`labels_from_classes`).

    Args:
        labels: ``patient_id`` and the 13 one-hot columns, shape ``(N, >=14)``.

    Returns:
        Class index per target in :data:`TARGETS` order, int64, shape
        ``(N, 5)``, in the row order of ``labels``.

    Raises:
        ValueError: on missing columns, duplicated patients or a group that is not one-hot.
    """
    _, onehot = validated_labels(labels)
    return np.stack([onehot[:, cols].argmax(axis=1) for cols in TARGET_SLICES.values()], axis=1)
