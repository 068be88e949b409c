"""Patient-bootstrap interval of the competition score.

The score's uncertainty comes from which patients were scored: :func:`bootstrap_interval`
resamples the patients with replacement and takes percentiles of the resampled scores.
Its inputs are the row-aligned arrays of :func:`patient_arrays`: ``(N, 13)`` one-hot
labels and ``(N, 13)`` normalised predictions, one row per scored patient.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctvoco.errors import DataError
from ctvoco.labels import (
    PATIENT_ID,
    PREDICTION_COLUMNS,
    TARGET_SLICES,
    aggregate_predictions,
    format_ids,
    validated_labels,
)
from ctvoco.metrics.rsna import score_arrays

__all__ = ["bootstrap_interval", "patient_arrays"]


def patient_arrays(
    labels: pd.DataFrame, predictions: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """One-hot labels and normalised predictions of the predicted patients, row-aligned.

    Predictions are reduced per patient with ``max`` and each target's group normalised,
    as the competition metric does, so that :func:`ctvoco.metrics.rsna.score_arrays` of
    the result is the score of the predicted patients.

    Args:
        labels: ``train.csv``-shaped labels (may hold more patients than predicted).
        predictions: ``patient_id`` and the 13 probability columns.

    Returns:
        ``(onehot, probs)``, both shape ``(N, 13)``, ``N`` the predicted patients.

    Raises:
        DataError: Predicted patients without labels, or a group predicted all zero.
    """
    per_patient = aggregate_predictions(predictions, "max")
    ids = per_patient[PATIENT_ID].to_numpy()
    label_ids, onehot = validated_labels(labels)
    rows = pd.Index(label_ids).get_indexer(ids)
    if (rows < 0).any():
        unknown = ids[rows < 0]
        raise DataError(f"{unknown.size} predicted patients have no labels: {format_ids(unknown)}")
    probs = per_patient[list(PREDICTION_COLUMNS)].to_numpy(dtype=np.float64, copy=True)
    for target, cols in TARGET_SLICES.items():
        totals = probs[:, cols].sum(axis=1, keepdims=True)
        if (totals <= 0).any():
            zero = ids[totals[:, 0] <= 0]
            raise DataError(f"the {target} predictions sum to zero for patients {format_ids(zero)}")
        probs[:, cols] /= totals
    return onehot[rows], probs


def bootstrap_interval(
    onehot: np.ndarray,
    probs: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the competition score, resampling patients.

    Args:
        onehot: ``(N, 13)`` one-hot labels (:func:`patient_arrays`).
        probs: ``(N, 13)`` normalised predictions, row-aligned with ``onehot``.
        n_resamples: How many resamples of ``N`` patients drawn with replacement.
        seed: Seed of the resampling (the same seed gives the same interval).
        level: Coverage of the interval.

    Returns:
        ``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
        resampled scores.
    """
    rng = np.random.default_rng(seed)
    n = onehot.shape[0]
    scores = np.empty(n_resamples)
    for k in range(n_resamples):
        pick = rng.integers(0, n, size=n)
        scores[k] = score_arrays(onehot[pick], probs[pick])["score"]
    low, high = np.quantile(scores, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)
