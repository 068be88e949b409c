"""The RSNA 2023 Abdominal Trauma Detection competition metric.

Reimplements, with vectorised numpy, the score of the Kaggle competition
"RSNA 2023 Abdominal Trauma Detection" (https://www.kaggle.com/competitions/
rsna-2023-abdominal-trauma-detection). Per patient the submission holds 13
probabilities, one per class of the five targets of :mod:`ctvoco.labels`
(``bowel`` and ``extravasation``: healthy / injury; ``kidney``, ``liver``, ``spleen``:
healthy / low / high). The score is the mean of six sample-weighted log losses:

1. For each target: the predicted probabilities of its group are normalised to sum to
   1 per patient, clipped to ``[EPS, 1 - EPS]`` and scored with the multi-class log loss
   ``-sum_i w_i sum_c y_ic log p_ic / sum_i w_i``, where the weight ``w_i`` depends on the
   patient's *true* class (:data:`ctvoco.labels.CLASS_WEIGHTS`: bowel 1 / 2,
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
(:func:`ctvoco.labels.aggregate_predictions`).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ctvoco.labels import (
    BINARY_TARGETS,
    CLASS_WEIGHTS,
    HEALTHY_COLUMNS,
    PATIENT_ID,
    PREDICTION_COLUMNS,
    SCORE_COLUMNS,
    TARGET_SLICES,
    aggregate_predictions,
    check_aggregate,
    format_ids,
    validated_labels,
)

__all__ = [
    "EPS",
    "rsna_score",
    "score_arrays",
    "score_predictions",
    "target_auc",
    "target_auc_arrays",
]

EPS: Final[float] = 1e-15
"""Probabilities are clipped to ``[EPS, 1 - EPS]``, as the competition's scikit-learn did."""


# --------------------------------------------------------------------------- alignment


def _normalised(probs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Divide each group of ``probs`` (N, 13) by its row sum; a zero sum is an error."""
    out = np.empty_like(probs)
    for target, cols in TARGET_SLICES.items():
        totals = probs[:, cols].sum(axis=1, keepdims=True)
        zero = totals[:, 0] <= 0.0
        if zero.any():
            raise ValueError(
                f"predicted probabilities of group {target!r} sum to zero for "
                f"{int(zero.sum())} patient(s): {format_ids(ids[zero])}"
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
    check_aggregate(aggregate)
    label_ids, onehot = validated_labels(labels)
    per_patient = aggregate_predictions(predictions, how=aggregate)
    ids = per_patient[PATIENT_ID].to_numpy()

    rows = pd.Index(label_ids).get_indexer(ids)
    unknown = rows < 0
    if unknown.any():
        hint = (
            f" (no patient matches at all: check that {PATIENT_ID} has the same type in both frames)"
            if unknown.all()
            else ""
        )
        raise ValueError(
            f"predictions for {int(unknown.sum())} unknown patients (not in labels): "
            f"{format_ids(ids[unknown])}{hint}"
        )
    unpredicted = pd.Index(ids).get_indexer(label_ids) < 0
    if unpredicted.any():
        raise ValueError(
            f"no prediction for {int(unpredicted.sum())} of {label_ids.size} labelled patients: "
            f"{format_ids(label_ids[unpredicted])}"
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
    label = (1.0 - onehot[:, HEALTHY_COLUMNS]).max(axis=1)
    pred = (1.0 - probs[:, HEALTHY_COLUMNS]).max(axis=1)
    return label, pred


def score_arrays(onehot: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The six losses and their mean from one-hot labels and normalised predictions.

    The array-level core of :func:`rsna_score`, for callers that score many candidate
    predictions of one validated table (e.g. fitting probability scaling).

    Args:
        onehot: ``(N, 13)`` one-hot labels in :data:`~ctvoco.labels.PREDICTION_COLUMNS` order.
        probs: ``(N, 13)`` predictions in the same order, each target's group summing to 1.

    Returns:
        ``{target: loss}`` for the six scored targets plus ``"score"``, their mean.
    """
    out: dict[str, float] = {}
    for target, cols in TARGET_SLICES.items():
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
        One AUC per name of :data:`ctvoco.labels.SCORE_COLUMNS`; NaN where the labels hold
        a single class for that target.

    Raises:
        ValueError: as :func:`rsna_score`.
    """
    _, onehot, probs = _aligned(labels, predictions, aggregate)
    return target_auc_arrays(onehot, probs)


def _auc_inputs(onehot: np.ndarray, probs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per name of :data:`ctvoco.labels.SCORE_COLUMNS`: ``(injured, score)``, each ``(N,)``.

    ``injured`` is 1 for an injured patient, 0 for a healthy one; ``score`` the predicted
    injury score of :func:`target_auc`, from ``(N, 13)`` labels and normalised predictions.
    """
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for target, cols in TARGET_SLICES.items():
        healthy = cols.start
        truth = 1.0 - onehot[:, healthy]
        if target in BINARY_TARGETS:
            pairs[target] = (truth, probs[:, healthy + 1])
        else:
            pairs[target] = (truth, 1.0 - probs[:, healthy])
    pairs["any_injury"] = _any_injury(onehot, probs)
    return pairs


def target_auc_arrays(onehot: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Per-target ROC AUC from one-hot labels and normalised predictions.

    The array-level core of :func:`target_auc`, with the same scores per target.

    Args:
        onehot: ``(N, 13)`` one-hot labels in :data:`~ctvoco.labels.PREDICTION_COLUMNS` order.
        probs: ``(N, 13)`` predictions in the same order, each target's group summing to 1.

    Returns:
        One AUC per name of :data:`ctvoco.labels.SCORE_COLUMNS`; NaN where the labels hold
        a single class for that target.
    """
    out: dict[str, float] = {}
    for name, (truth, score) in _auc_inputs(onehot, probs).items():
        if np.unique(truth).size < 2:
            out[name] = float("nan")
        else:
            out[name] = float(roc_auc_score(truth, score))
    return out


def score_predictions(labels: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    """The six losses, ``score`` and ``auc_<target>`` for per-series predictions.

    Several rows of one patient (one per CT series) are reduced with ``max``.

    Args:
        labels: As for :func:`rsna_score`.
        predictions: As for :func:`rsna_score`.

    Returns:
        What :func:`rsna_score` returns, plus ``auc_<name>`` for each name of
        :data:`ctvoco.labels.SCORE_COLUMNS` (:func:`target_auc`).

    Raises:
        ValueError: As :func:`rsna_score`.
    """
    metrics = rsna_score(labels, predictions, aggregate="max")
    metrics.update(
        {f"auc_{k}": v for k, v in target_auc(labels, predictions, aggregate="max").items()}
    )
    return metrics
