"""The RSNA 2023 Abdominal Trauma Detection competition metric.

Reimplements, with vectorised numpy, the score of the Kaggle competition
"RSNA 2023 Abdominal Trauma Detection" (https://www.kaggle.com/competitions/
rsna-2023-abdominal-trauma-detection). Per patient the submission holds 13
probabilities, one per class of the five targets of :mod:`ctvoco.schema`
(``bowel`` and ``extravasation``: healthy / injury; ``kidney``, ``liver``, ``spleen``:
healthy / low / high). The score is the mean of six sample-weighted log losses:

1. For each target: the predicted probabilities of its group are normalised to sum to
   1 per patient, clipped to ``[EPS, 1 - EPS]`` and scored with the multi-class log loss
   ``-sum_i w_i sum_c y_ic log p_ic / sum_i w_i``, where the weight ``w_i`` depends on the
   patient's *true* class (:data:`ctvoco.schema.CLASS_WEIGHTS`: bowel 1 / 2,
   extravasation 1 / 6, organs 1 / 2 / 4).
2. ``any_injury``: the label is ``max_t (1 - y_t,healthy)``, the prediction
   ``max_t (1 - p_t,healthy)`` over the five *normalised* groups, scored with the binary
   log loss with weights 1 (healthy) / 6 (injured).

Clip and normalise order. Kaggle's metric normalises each group and then calls
``sklearn.metrics.log_loss(y_true, y_pred, sample_weight=w)``; the scikit-learn the
competition was scored with (2023) clipped to ``[1e-15, 1 - 1e-15]``. This module does
exactly that, whatever scikit-learn is installed: normalise group -> clip to
``[EPS, 1 - EPS]`` with ``EPS = 1e-15`` -> weighted log loss. For a binary prediction ``p``
the pair ``[1 - p, p]`` is formed first and then clipped. The 2023 scikit-learn also
renormalised the clipped rows, which moves a loss by less than 1e-14 and is not done here.
Newer scikit-learn releases clip at the float64 machine epsilon instead (about 2.2e-16):
a confident wrong prediction then costs ``-log(2.2e-16) = 36.04`` instead of
``-log(1e-15) = 34.54``, so only predictions away from hard 0 / 1 agree with them.

Predictions may hold several rows per patient (one per CT series); they are first
reduced per patient and column with ``max`` (default) or ``mean``
(:func:`aggregate_predictions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ctvoco.schema import (
    BINARY_TARGETS,
    CLASS_WEIGHTS,
    LABEL_COLUMNS,
    PREDICTION_COLUMNS,
    SCORE_COLUMNS,
    TARGET_CLASSES,
    TARGETS,
    target_columns,
)

__all__ = [
    "AGGREGATIONS",
    "EPS",
    "aggregate_predictions",
    "classes_from_labels",
    "labels_from_classes",
    "prevalence_predictions",
    "rsna_score",
    "score_arrays",
    "target_auc",
]

EPS: Final[float] = 1e-15
"""Probabilities are clipped to ``[EPS, 1 - EPS]``, as the competition's scikit-learn did."""

AGGREGATIONS: Final[tuple[str, ...]] = ("max", "mean")
"""The allowed per-patient aggregations of several prediction rows."""

_ID: Final[str] = "patient_id"
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


_SLICES: Final[dict[str, slice]] = _group_slices()
_HEALTHY: Final[np.ndarray] = np.array([_SLICES[t].start for t in TARGETS])
"""Index of each target's ``*_healthy`` column among the 13 prediction columns."""


# --------------------------------------------------------------------------- validation


def _format_ids(ids: Iterable[object]) -> str:
    """Up to five distinct ids, comma separated, with a count of the rest."""
    unique = list(dict.fromkeys(ids))
    shown = ", ".join(str(i) for i in unique[:_MAX_IDS_SHOWN])
    rest = len(unique) - _MAX_IDS_SHOWN
    return f"{shown} (and {rest} more)" if rest > 0 else shown


def _check_aggregate(how: str) -> None:
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregate {how!r}; expected one of {', '.join(AGGREGATIONS)}")


def _check_frame(frame: object, what: str) -> pd.DataFrame:
    """Check that ``frame`` is a non-empty DataFrame with ``patient_id`` and the 13 columns."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in (_ID, *PREDICTION_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing {len(missing)} column(s): {', '.join(missing)}")
    if len(frame) == 0:
        raise ValueError(f"{what} has no rows")
    n_missing_ids = int(frame[_ID].isna().sum())
    if n_missing_ids:
        raise ValueError(f"{what} has {n_missing_ids} row(s) with a missing {_ID}")
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
        f"{rows.size} row(s), patient(s) {_format_ids(ids[rows])}"
    )


def _validated_labels(labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
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
    ids = labels[_ID].to_numpy()
    duplicated = labels[_ID].duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise ValueError(
            f"labels have {int(duplicated.sum())} rows with a duplicated {_ID}: "
            f"{_format_ids(ids[duplicated])}"
        )
    onehot = _float_block(labels, "labels")
    for target, cols in _SLICES.items():
        block = onehot[:, cols]
        ok = np.isin(block, (0.0, 1.0)).all(axis=1) & (block.sum(axis=1) == 1.0)
        if not ok.all():
            raise ValueError(
                f"labels are not one-hot in group {target!r} ({', '.join(target_columns(target))}) "
                f"for {int((~ok).sum())} patient(s): {_format_ids(ids[~ok])}"
            )
    return ids, onehot


def _normalised(probs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Divide each group of ``probs`` (N, 13) by its row sum; a zero sum is an error."""
    out = np.empty_like(probs)
    for target, cols in _SLICES.items():
        totals = probs[:, cols].sum(axis=1, keepdims=True)
        zero = totals[:, 0] <= 0.0
        if zero.any():
            raise ValueError(
                f"predicted probabilities of group {target!r} sum to zero for "
                f"{int(zero.sum())} patient(s): {_format_ids(ids[zero])}"
            )
        out[:, cols] = probs[:, cols] / totals
    return out


def _aligned(
    labels: pd.DataFrame, predictions: pd.DataFrame, aggregate: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate, aggregate and match labels and predictions by patient.

    Returns:
        ``(ids, onehot, probs)``: patient ids sorted, shape ``(N,)``; the one-hot labels,
        shape ``(N, 13)``; the group-normalised predicted probabilities, shape ``(N, 13)``.
    """
    _check_aggregate(aggregate)
    label_ids, onehot = _validated_labels(labels)
    per_patient = aggregate_predictions(predictions, how=aggregate)
    ids = per_patient[_ID].to_numpy()

    rows = pd.Index(label_ids).get_indexer(ids)
    unknown = rows < 0
    if unknown.any():
        hint = (
            f" (no patient matches at all: check that {_ID} has the same type in both frames)"
            if unknown.all()
            else ""
        )
        raise ValueError(
            f"predictions for {int(unknown.sum())} unknown patients (not in labels): "
            f"{_format_ids(ids[unknown])}{hint}"
        )
    unpredicted = pd.Index(ids).get_indexer(label_ids) < 0
    if unpredicted.any():
        raise ValueError(
            f"no prediction for {int(unpredicted.sum())} of {label_ids.size} labelled patients: "
            f"{_format_ids(label_ids[unpredicted])}"
        )
    probs = _normalised(per_patient[list(PREDICTION_COLUMNS)].to_numpy(dtype=np.float64), ids)
    return ids, onehot[rows], probs


# --------------------------------------------------------------------------- the metric


def _weighted_log_loss(onehot: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> float:
    """Sample-weighted multi-class log loss.

    Args:
        onehot: true classes, shape ``(N, K)``.
        probs: predicted probabilities, rows summing to 1, shape ``(N, K)``.
        weights: sample weights, shape ``(N,)``.

    Returns:
        ``-sum_i w_i sum_c y_ic log(clip(p_ic)) / sum_i w_i``.
    """
    clipped = np.clip(probs, EPS, 1.0 - EPS)
    per_row = -(onehot * np.log(clipped)).sum(axis=1)
    return float(np.dot(weights, per_row) / weights.sum())


def _any_injury(onehot: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``any_injury`` label and prediction, each shape ``(N,)``, from (N, 13) inputs."""
    label = (1.0 - onehot[:, _HEALTHY]).max(axis=1)
    pred = (1.0 - probs[:, _HEALTHY]).max(axis=1)
    return label, pred


def score_arrays(onehot: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The six losses and their mean from one-hot labels and normalised predictions.

    The array-level core of :func:`rsna_score`, for callers that score many candidate
    predictions of one validated table (e.g. fitting probability scaling).

    Args:
        onehot: ``(N, 13)`` one-hot labels in :data:`~ctvoco.schema.PREDICTION_COLUMNS` order.
        probs: ``(N, 13)`` predictions in the same order, each target's group summing to 1.

    Returns:
        ``{target: loss}`` for the six scored targets plus ``"score"``, their mean.
    """
    out: dict[str, float] = {}
    for target, cols in _SLICES.items():
        truth = onehot[:, cols]
        weights = np.asarray(CLASS_WEIGHTS[target])[truth.argmax(axis=1)]
        out[target] = _weighted_log_loss(truth, probs[:, cols], weights)
    label, pred = _any_injury(onehot, probs)
    weights = np.asarray(CLASS_WEIGHTS["any_injury"])[label.astype(np.int64)]
    out["any_injury"] = _weighted_log_loss(
        np.column_stack([1.0 - label, label]), np.column_stack([1.0 - pred, pred]), weights
    )
    out["score"] = float(np.mean([out[name] for name in SCORE_COLUMNS]))
    return out


def rsna_score(
    labels: pd.DataFrame, predictions: pd.DataFrame, aggregate: str = "max"
) -> dict[str, float]:
    """The competition score and its six component losses.

    Args:
        labels: shaped like ``train.csv``: ``patient_id`` and the 13 one-hot columns
            ``bowel_healthy … spleen_high``, one row per patient, shape ``(N, >=14)``.
            ``any_injury`` and other extra columns are ignored (``any_injury`` is recomputed).
        predictions: shaped like ``sample_submission.csv``: ``patient_id`` and the 13
            non-negative probability columns, shape ``(M, >=14)``, possibly several rows
            per patient (extra columns such as ``series_id`` are ignored). Groups need not
            sum to 1; they are normalised.
        aggregate: how several rows of one patient are reduced, per column: ``"max"`` or
            ``"mean"``.

    Returns:
        ``{"bowel", "extravasation", "kidney", "liver", "spleen", "any_injury", "score"}``
        -> float, where ``score`` is the mean of the six losses (lower is better).

    Raises:
        ValueError: on missing columns, NaN / infinite / negative predictions, a predicted
            group summing to zero, labels that are not one-hot, duplicated labelled
            patients, predictions for unknown patients, labelled patients without
            prediction, or an unknown ``aggregate``.
    """
    _, onehot, probs = _aligned(labels, predictions, aggregate)
    return score_arrays(onehot, probs)


def target_auc(
    labels: pd.DataFrame, predictions: pd.DataFrame, aggregate: str = "max"
) -> dict[str, float]:
    """Per-target patient-level ROC AUC of "injured vs healthy".

    The score is the normalised injury probability for ``bowel`` and ``extravasation``,
    ``1 - p_healthy`` (normalised) for ``kidney``, ``liver`` and ``spleen``, and the
    ``any_injury`` prediction of the metric for ``any_injury``.

    Args:
        labels: as for :func:`rsna_score`.
        predictions: as for :func:`rsna_score`.
        aggregate: as for :func:`rsna_score`.

    Returns:
        One AUC per name of :data:`ctvoco.schema.SCORE_COLUMNS`; NaN where the labels hold
        a single class for that target.

    Raises:
        ValueError: as :func:`rsna_score`.
    """
    _, onehot, probs = _aligned(labels, predictions, aggregate)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for target, cols in _SLICES.items():
        healthy = cols.start
        truth = 1.0 - onehot[:, healthy]
        if target in BINARY_TARGETS:
            pairs[target] = (truth, probs[:, healthy + 1])
        else:
            pairs[target] = (truth, 1.0 - probs[:, healthy])
    pairs["any_injury"] = _any_injury(onehot, probs)

    out: dict[str, float] = {}
    for name, (truth, score) in pairs.items():
        if np.unique(truth).size < 2:
            out[name] = float("nan")
        else:
            out[name] = float(roc_auc_score(truth, score))
    return out


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
    _check_aggregate(how)
    _check_frame(predictions, "predictions")
    ids = predictions[_ID].to_numpy()
    values = _float_block(predictions, "predictions")
    _raise_on_mask(np.isnan(values), ids, "NaN")
    _raise_on_mask(np.isinf(values), ids, "infinite values")
    _raise_on_mask(values < 0.0, ids, "negative probabilities")

    frame = pd.DataFrame(values, columns=list(PREDICTION_COLUMNS))
    frame.insert(0, _ID, ids)
    return frame.groupby(_ID, sort=True)[list(PREDICTION_COLUMNS)].agg(how).reset_index()


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
    _, onehot = _validated_labels(labels)
    ids = list(patient_ids)
    if not ids:
        raise ValueError("patient_ids is empty")
    prevalence = onehot.mean(axis=0)
    frame = pd.DataFrame(np.tile(prevalence, (len(ids), 1)), columns=list(PREDICTION_COLUMNS))
    frame.insert(0, _ID, ids)
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
        classes: class index per target in :data:`ctvoco.schema.TARGETS` order
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
                f"{_format_ids(column[bad])} for patient(s) {_format_ids(ids[bad])}"
            )
        blocks.append(np.eye(n_classes, dtype=np.int64)[column])
    onehot = np.concatenate(blocks, axis=1)
    any_injury = (values > 0).any(axis=1).astype(np.int64)

    frame = pd.DataFrame(np.column_stack([onehot, any_injury]), columns=list(LABEL_COLUMNS))
    frame.insert(0, _ID, list(ids))
    return frame


def classes_from_labels(labels: pd.DataFrame) -> np.ndarray:
    """Integer classes from a ``train.csv``-like frame (inverse of :func:`labels_from_classes`).

    Args:
        labels: ``patient_id`` and the 13 one-hot columns, shape ``(N, >=14)``.

    Returns:
        Class index per target in :data:`ctvoco.schema.TARGETS` order, int64, shape
        ``(N, 5)``, in the row order of ``labels``.

    Raises:
        ValueError: on missing columns, duplicated patients or a group that is not one-hot.
    """
    _, onehot = _validated_labels(labels)
    return np.stack([onehot[:, cols].argmax(axis=1) for cols in _SLICES.values()], axis=1)
