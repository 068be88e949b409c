"""Per-target probability scaling, fitted on out-of-fold predictions to lower the metric.

A factor multiplies a class probability of a patient's prediction; each target's group is
then renormalised to the sum it had (1 for a submission), as the metric normalises each
group before scoring. Only ratios inside a group matter to the metric, so one factor per
*injury* class suffices: ``bowel_injury``, ``extravasation_injury``, ``kidney_low``,
``kidney_high``, ``liver_low``, ``liver_high``, ``spleen_low``, ``spleen_high``
(:data:`SCALED_COLUMNS`); a ``*_healthy`` column keeps factor 1.

:func:`fit_scaling` chooses the factors that minimise the competition score of the given
predictions (coordinate descent over the log factors, each a bounded 1-D search, because
``any_injury`` couples the targets). Scored on the predictions they were fitted on, the
factors look better than they are: fit on some folds, score on the others
(``ctvoco-cv-report --fit-scaling``).

The factors travel as ``scaling.json`` (:func:`write_scaling_json`) or inside a
classifier checkpoint under :data:`CHECKPOINT_KEY` (:func:`store_in_checkpoint`);
``ctvoco-predict`` applies them to the submission.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from ctvoco.errors import DataError
from ctvoco.io.atomic import write_text_atomic
from ctvoco.labels import PREDICTION_COLUMNS, TARGETS, aggregate_predictions, target_columns
from ctvoco.metrics.rsna import rsna_score, score_arrays

__all__ = [
    "CHECKPOINT_KEY",
    "SCALED_COLUMNS",
    "apply_scaling",
    "check_factors",
    "checkpoint_factors",
    "checkpoint_scaling",
    "fit_scaling",
    "format_factors",
    "read_scaling_json",
    "store_in_checkpoint",
    "write_scaling_json",
]

SCALED_COLUMNS: Final[tuple[str, ...]] = tuple(
    column for target in TARGETS for column in target_columns(target)[1:]
)
"""The columns :func:`fit_scaling` fits a factor for: every class but ``*_healthy``."""

CHECKPOINT_KEY: Final[str] = "ctvoco_scaling"
"""Where a classifier checkpoint keeps its factors: ``{"factors": {...}, "source": str}``."""

LOG_BOUND: Final[float] = math.log(100.0)
"""Factors are searched in ``[1/100, 100]``."""

_SWEEPS: Final[int] = 10
_TOLERANCE: Final[float] = 1e-7


def check_factors(factors: Mapping[str, Any], where: str) -> dict[str, float]:
    """Validate factors: known prediction columns, each a positive finite number.

    Args:
        factors: Column name -> factor.
        where: What holds them (a file name), named in the error.

    Returns:
        The factors as ``{column: float}``.

    Raises:
        DataError: Naming ``where`` and the offending key.
    """
    if not isinstance(factors, Mapping):
        raise DataError(f"{where}: the factors must map column names to numbers")
    checked: dict[str, float] = {}
    for column, value in factors.items():
        if column not in PREDICTION_COLUMNS:
            raise DataError(
                f"{where}: {column!r} is not a submission column (expected some of "
                f"{', '.join(SCALED_COLUMNS)})"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(f"{where}: the factor of {column} is {value!r}, not a number")
        if not math.isfinite(value) or value <= 0:
            raise DataError(
                f"{where}: the factor of {column} is {value}; it must be a positive number"
            )
        checked[str(column)] = float(value)
    return checked


def apply_scaling(predictions: pd.DataFrame, factors: Mapping[str, float]) -> pd.DataFrame:
    """Multiply columns by their factors and renormalise each target's group to its sum.

    Args:
        predictions: The 13 probability columns (and any others, such as ``patient_id``),
            one row per patient (or per series).
        factors: Column -> factor; a column without one keeps factor 1.

    Returns:
        A copy of ``predictions`` in which each group of a row sums to what it summed to
        before; with every factor 1 the copy equals the input.
    """
    factors = check_factors(factors, "scaling factors")
    out = predictions.copy()
    for target in TARGETS:
        columns = target_columns(target)
        if all(factors.get(c, 1.0) == 1.0 for c in columns):
            continue
        values = out[columns].to_numpy(dtype=np.float64)
        scaled = values * np.array([factors.get(c, 1.0) for c in columns])
        totals, new = values.sum(axis=1, keepdims=True), scaled.sum(axis=1, keepdims=True)
        out[columns] = np.divide(scaled * totals, new, out=values.copy(), where=new > 0)
    return out


def fit_scaling(
    oof: pd.DataFrame, labels: pd.DataFrame, aggregate: str = "max"
) -> dict[str, float]:
    """The factor of each injury class that minimises the competition score of ``oof``.

    The predictions are first reduced per patient (``aggregate``, as the metric does);
    the factors scale those per-patient rows.

    Args:
        oof: Out-of-fold predictions: ``patient_id`` and the 13 probability columns,
            possibly one row per series.
        labels: ``train.csv``-shaped labels of (at least) the predicted patients.
        aggregate: ``max`` or ``mean``, the per-patient reduction of several series.

    Returns:
        One factor per column of :data:`SCALED_COLUMNS`, each in ``[1/100, 100]``.

    Raises:
        ValueError: As :func:`ctvoco.metrics.rsna_score` (missing patients, bad values).
    """
    score = _score_of_log_factors(oof, labels, aggregate)
    scaled = [PREDICTION_COLUMNS.index(c) for c in SCALED_COLUMNS]
    log_factors = np.zeros(len(PREDICTION_COLUMNS))
    best = score(log_factors)
    for _ in range(_SWEEPS):
        start = best
        for index in scaled:

            def along(value: float, index: int = index) -> float:
                trial = log_factors.copy()
                trial[index] = value
                return score(trial)

            found = minimize_scalar(
                along, bounds=(-LOG_BOUND, LOG_BOUND), method="bounded", options={"xatol": 1e-3}
            )
            if found.fun < best:
                best, log_factors[index] = float(found.fun), float(found.x)
        if start - best < _TOLERANCE:
            break
    return {PREDICTION_COLUMNS[i]: math.exp(log_factors[i]) for i in scaled}


def _score_of_log_factors(
    oof: pd.DataFrame, labels: pd.DataFrame, aggregate: str
) -> Callable[[np.ndarray], float]:
    """The competition score of ``oof``'s per-patient rows scaled by ``exp(v)`` (13 values).

    The labels and predictions are validated and matched once by
    :func:`ctvoco.metrics.rsna_score`; each call then scores arrays with the metric's own
    loss computation, which is what makes a search of hundreds of calls fast.
    """
    patients = aggregate_predictions(oof, how=aggregate)
    subset = labels[labels["patient_id"].isin(patients["patient_id"])]
    rsna_score(subset, patients)  # raises on unknown or unpredicted patients, bad values
    columns = list(PREDICTION_COLUMNS)
    onehot = subset.set_index("patient_id").loc[patients["patient_id"], columns]
    truth = onehot.to_numpy(dtype=np.float64)
    probs = patients[columns].to_numpy(dtype=np.float64)
    sizes = [len(target_columns(t)) for t in TARGETS]
    starts = np.cumsum([0, *sizes[:-1]])
    probs = probs / np.repeat(np.add.reduceat(probs, starts, axis=1), sizes, axis=1)

    def score(log_factors: np.ndarray) -> float:
        scaled = probs * np.exp(log_factors)
        scaled /= np.repeat(np.add.reduceat(scaled, starts, axis=1), sizes, axis=1)
        return score_arrays(truth, scaled)["score"]

    return score


def format_factors(factors: Mapping[str, float]) -> str:
    """``bowel_injury=1.23, ...`` for logs."""
    return ", ".join(f"{column}={value:.4g}" for column, value in factors.items())


# --------------------------------------------------------------------------- files
def write_scaling_json(
    path: str | os.PathLike[str], factors: Mapping[str, float], **extra: Any
) -> Path:
    """Write ``{"factors": ..., **extra}`` to ``path`` atomically.

    Args:
        path: The ``scaling.json`` to write.
        factors: Column -> factor.
        extra: More JSON-serialisable entries (scores, what the factors were fitted on).
    """
    path = Path(path)
    record = {"factors": check_factors(factors, str(path)), **extra}
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def read_scaling_json(path: str | os.PathLike[str]) -> dict[str, float]:
    """The factors of a ``scaling.json``.

    Raises:
        DataError: The file is missing, not JSON, has no ``factors`` or a bad factor.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"scaling={path}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"scaling={path}: not a readable JSON file ({exc})") from exc
    if not isinstance(record, dict) or "factors" not in record:
        raise DataError(f"scaling={path}: no 'factors' entry (written by ctvoco-cv-report?)")
    return check_factors(record["factors"], str(path))


def checkpoint_factors(
    checkpoint: Mapping[str, Any], path: str | os.PathLike[str]
) -> dict[str, float] | None:
    """The factors a checkpoint dictionary carries under :data:`CHECKPOINT_KEY`, if any.

    Raises:
        DataError: The entry is malformed (naming ``path``).
    """
    stored = checkpoint_scaling(checkpoint, path)
    return None if stored is None else stored[0]


def checkpoint_scaling(
    checkpoint: Mapping[str, Any], path: str | os.PathLike[str]
) -> tuple[dict[str, float], str] | None:
    """The factors a checkpoint dictionary carries and where they were fitted, if any.

    Returns:
        ``(factors, source)``; ``None`` when the checkpoint carries no factors.

    Raises:
        DataError: The entry is malformed (naming ``path``).
    """
    entry = checkpoint.get(CHECKPOINT_KEY)
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or "factors" not in entry:
        raise DataError(f"{path}: the {CHECKPOINT_KEY} entry has no factors")
    factors = check_factors(entry["factors"], f"{path} ({CHECKPOINT_KEY})")
    return factors, str(entry.get("source") or "")


def store_in_checkpoint(
    path: str | os.PathLike[str], factors: Mapping[str, float], source: str = ""
) -> None:
    """Write ``factors`` into the checkpoint file ``path`` (atomically, weights-only data).

    Args:
        path: A checkpoint file (read with ``weights_only=True``).
        factors: Column -> factor.
        source: Where the factors came from (a ``scaling.json``), kept beside them.

    Raises:
        DataError: The file cannot be read as a checkpoint, or a factor is invalid.
    """
    from ctvoco.io.atomic import torch_save_atomic
    from ctvoco.models.checkpoints import load_checkpoint_data

    raw = load_checkpoint_data(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: not a checkpoint dictionary")
    raw[CHECKPOINT_KEY] = {"factors": check_factors(factors, str(path)), "source": str(source)}
    torch_save_atomic(raw, Path(path))
