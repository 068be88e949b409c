"""Paired statistics of the competition score for arms trained with several seeds.

A study compares *arms* (e.g. a classifier trained from scratch and one started from
pretrained weights), each trained with ``S`` seeds and scored on the same ``N`` held-out
patients. Predictions of one arm are an array of shape ``(S, N, 13)``: row ``s`` holds the
normalised predictions of the model of seed ``s`` (each target's group summing to 1, as
:func:`ctvoco.metrics.bootstrap.patient_arrays` returns them), in
:data:`ctvoco.labels.PREDICTION_COLUMNS` order, row-aligned with the ``(N, 13)`` one-hot
labels. Seed ``s`` of two arms is a *pair*: the same labelled training patients, the same
split.

Two sources of chance move a result: which seeds were run and which patients were scored.
The intervals here come from a *two-level bootstrap* that redraws both. Each resample

1. draws ``S`` seed indices with replacement (the same draw for both arms, so that pairs
   stay together);
2. draws ``N`` patient indices with replacement (the same draw for every seed and both
   arms, so that every model is scored on the same patients);
3. recomputes the statistic: the competition score of every drawn seed on the drawn
   patients, averaged over the drawn seeds.

The interval is the percentile interval of the resampled statistics: their
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. With ``resample_seeds=False`` only
the patients are redrawn and every resample averages all ``S`` seeds: the uncertainty of
these very models on other patients, not of the training recipe.

For two arms ``a`` and ``b`` (:func:`paired_difference`) the statistic is the mean paired
difference ``mean_s score(a_s) - score(b_s)``. The score is a loss, so a positive
difference means ``b`` scores lower, i.e. better. Pairing removes what two models of one
seed share (their training patients, and the patients they are scored on), so the
interval of the difference is usually much narrower than the two arms' intervals
suggest. Its standard error ``se`` (the standard deviation of the resampled differences)
gives the *minimal detectable effect*: ``mde = (z_{1 - (1 - level) / 2} + z_power) * se``
is the smallest true difference that a test at that level would detect with probability
``power``, under a normal approximation. A study whose effect of interest is below
``mde`` needs more seeds or more patients.

Per-target AUCs (:func:`auc_intervals`) are resampled the same way; a resample in which a
target holds a single class has no AUC for that target and is skipped. The constant
floors of :mod:`ctvoco.metrics.floors` (:func:`floor_intervals`) depend on the patients
only and are refitted on every patient resample.

The score of a resample is computed from per-patient losses weighted by how often each
patient was drawn, which equals :func:`ctvoco.metrics.rsna.score_arrays` of the drawn rows;
all resamples are scored with a few matrix products.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

import numpy as np

from ctvoco.errors import ArgumentError, DataError, is_finite_number, is_whole_number
from ctvoco.labels import (
    CLASS_WEIGHTS,
    HEALTHY_COLUMNS,
    PREDICTION_COLUMNS,
    SCORE_COLUMNS,
    TARGET_SLICES,
)
from ctvoco.metrics.floors import constant_floors, optimal_constant, prevalence_constant
from ctvoco.metrics.rsna import EPS, _auc_inputs, score_arrays, target_auc_arrays

__all__ = [
    "PairedDifference",
    "auc_intervals",
    "floor_intervals",
    "paired_difference",
    "score_interval",
    "target_auc_arrays",
]

_CELLS_PER_CHUNK: Final[int] = 1 << 22
"""Resamples are drawn in chunks of at most this many (resample, patient) counts."""

_SUM_TOLERANCE: Final[float] = 1e-6
"""How far from 1 a predicted group's sum may be."""


@dataclass(frozen=True)
class PairedDifference:
    """The mean paired score difference of two arms and its bootstrap statistics.

    Attributes:
        difference: ``mean_s score(a_s) - score(b_s)`` on all patients; positive when arm
            ``b`` scores lower (better).
        low: Lower end of the percentile interval of the resampled differences.
        high: Upper end of that interval.
        se: Standard deviation of the resampled differences.
        mde: Minimal detectable effect, ``(z_{1 - (1 - level) / 2} + z_power) * se``.
        wins: Seeds where arm ``b`` scores lower than arm ``a`` on all patients.
        seeds: ``S``, the number of seed pairs.
    """

    difference: float
    low: float
    high: float
    se: float
    mde: float
    wins: int
    seeds: int


# --------------------------------------------------------------------------- validation


def _check_settings(n_resamples: int, level: float, power: float = 0.5) -> None:
    """Refuse a resample count below 2, or a level or power outside ``(0, 1)``."""
    if not is_whole_number(n_resamples) or n_resamples < 2:
        raise ArgumentError("n_resamples", f" must be a whole number >= 2; got {n_resamples!r}")
    for name, value in (("level", level), ("power", power)):
        if not is_finite_number(value) or not 0.0 < value < 1.0:
            raise ArgumentError(name, f" must be a number strictly between 0 and 1; got {value!r}")


def _check_onehot(onehot: np.ndarray) -> np.ndarray:
    """``onehot`` as float64 ``(N, 13)``, each target's group one-hot; otherwise DataError."""
    onehot = np.asarray(onehot, dtype=np.float64)
    if onehot.ndim != 2 or onehot.shape[1] != len(PREDICTION_COLUMNS) or onehot.shape[0] < 1:
        raise DataError(
            f"onehot must have shape (N, {len(PREDICTION_COLUMNS)}) with N >= 1; got {onehot.shape}"
        )
    binary = np.isin(onehot, (0.0, 1.0)).all(axis=1)
    for cols in TARGET_SLICES.values():
        binary &= onehot[:, cols].sum(axis=1) == 1.0
    if not binary.all():
        rows = np.flatnonzero(~binary)
        raise DataError(f"onehot is not one-hot per target in rows {rows[:5].tolist()}")
    return onehot


def _check_probs(name: str, probs: np.ndarray, n_patients: int) -> np.ndarray:
    """``probs`` as float64 ``(S, N, 13)`` (an ``(N, 13)`` array is one seed), normalised."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2:
        probs = probs[None]
    if probs.ndim != 3 or probs.shape[2] != len(PREDICTION_COLUMNS) or probs.shape[0] < 1:
        raise DataError(
            f"{name} must have shape (S, N, {len(PREDICTION_COLUMNS)}) with S >= 1; "
            f"got {probs.shape}"
        )
    if probs.shape[1] != n_patients:
        raise DataError(
            f"{name} holds {probs.shape[1]} patients per seed but onehot holds {n_patients} "
            "patients; rows must be the same patients in the same order"
        )
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise DataError(f"{name} holds negative, NaN or infinite probabilities")
    for target, cols in TARGET_SLICES.items():
        off = np.abs(probs[..., cols].sum(axis=-1) - 1.0) > _SUM_TOLERANCE
        if off.any():
            seed, row = (int(i[0]) for i in np.nonzero(off))
            total = float(probs[seed, row, cols].sum())
            raise DataError(
                f"{name}: the {target} probabilities do not sum to 1 for seed {seed}, "
                f"patient row {row} (sum {total:.6g}); normalise each target's group first "
                "(patient_arrays does)"
            )
    return probs


# --------------------------------------------------------------------------- resampling


def _counts(rng: np.random.Generator, rows: int, size: int) -> np.ndarray:
    """How often each of ``size`` items is drawn in ``rows`` draws of ``size`` with
    replacement: float64 ``(rows, size)``, each row summing to ``size``."""
    picks = rng.integers(0, size, size=(rows, size)) + size * np.arange(rows)[:, None]
    return np.bincount(picks.ravel(), minlength=rows * size).reshape(rows, size).astype(float)


def _draws(
    rng: np.random.Generator,
    n_resamples: int,
    n_seeds: int,
    n_patients: int,
    resample_seeds: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The two-level bootstrap, in chunks of resamples.

    Yields:
        ``(seed_counts, patient_counts)``: how often each seed was drawn, shape ``(R, S)``
        (all ones when seeds are not resampled), and how often each patient was drawn,
        shape ``(R, N)``, for the ``R`` resamples of the chunk.
    """
    chunk = max(1, _CELLS_PER_CHUNK // max(n_patients, n_seeds))
    done = 0
    while done < n_resamples:
        rows = min(chunk, n_resamples - done)
        if resample_seeds:
            seed_counts = _counts(rng, rows, n_seeds)
        else:
            seed_counts = np.ones((rows, n_seeds))
        yield seed_counts, _counts(rng, rows, n_patients)
        done += rows


def _seed_mean(seed_counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds: ``(R, S)`` counts and ``(R, S)`` values -> ``(R,)``."""
    return (seed_counts * values).sum(axis=1) / seed_counts.shape[1]


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of ``values`` (NaN, NaN when empty)."""
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


# --------------------------------------------------------------------------- the score


def _loss_terms(onehot: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient terms of the six weighted log losses.

    Args:
        onehot: ``(N, 13)`` one-hot labels.
        probs: ``(S, N, 13)`` normalised predictions.

    Returns:
        ``(weights, weighted_losses)``: the sample weight of each patient per scored
        target, shape ``(N, 6)``, and weight times log loss, shape ``(S, N, 6)``, in
        :data:`ctvoco.labels.SCORE_COLUMNS` order. A target's loss on patients drawn
        ``c_i`` times is ``sum_i c_i * weighted_losses_i / sum_i c_i * weights_i``.
    """
    weights, losses = [], []
    for target, cols in TARGET_SLICES.items():
        truth = onehot[:, cols]
        weights.append(np.asarray(CLASS_WEIGHTS[target])[truth.argmax(axis=1)])
        clipped = np.clip(probs[..., cols], EPS, 1.0 - EPS)
        losses.append(-(truth * np.log(clipped)).sum(axis=-1))
    label = (1.0 - onehot[:, HEALTHY_COLUMNS]).max(axis=1)
    pred = (1.0 - probs[..., HEALTHY_COLUMNS]).max(axis=-1)
    weights.append(np.asarray(CLASS_WEIGHTS["any_injury"])[label.astype(np.int64)])
    losses.append(
        -(
            label * np.log(np.clip(pred, EPS, 1.0 - EPS))
            + (1.0 - label) * np.log(np.clip(1.0 - pred, EPS, 1.0 - EPS))
        )
    )
    weight = np.stack(weights, axis=-1)
    return weight, weight * np.stack(losses, axis=-1)


def _resampled_scores(
    weights: np.ndarray, weighted_losses: np.ndarray, patient_counts: np.ndarray
) -> np.ndarray:
    """Score of every seed on every patient resample.

    Args:
        weights: ``(N, 6)`` from :func:`_loss_terms`.
        weighted_losses: ``(S, N, 6)`` from :func:`_loss_terms`.
        patient_counts: ``(R, N)`` draws per patient.

    Returns:
        ``(R, S)`` competition scores.
    """
    seeds, n, targets = weighted_losses.shape
    flat = weighted_losses.transpose(1, 0, 2).reshape(n, seeds * targets)
    numerator = (patient_counts @ flat).reshape(-1, seeds, targets)
    denominator = patient_counts @ weights
    return (numerator / denominator[:, None, :]).mean(axis=-1)


def _seed_scores(onehot: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(S,)`` scores on all patients of ``(S, N, 13)`` predictions."""
    return np.array([score_arrays(onehot, p)["score"] for p in probs])


def paired_difference(
    onehot: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    power: float = 0.8,
    resample_seeds: bool = True,
) -> PairedDifference:
    """Mean paired score difference of arm ``a`` minus arm ``b``, with a two-level bootstrap.

    Args:
        onehot: ``(N, 13)`` one-hot labels of the scored patients.
        probs_a: ``(S, N, 13)`` normalised predictions of arm ``a``, one row per seed.
        probs_b: ``(S, N, 13)`` of arm ``b``; row ``s`` pairs with row ``s`` of ``probs_a``.
        n_resamples: Number of bootstrap resamples (at least 2).
        seed: Seed of the resampling (the same seed gives the same result).
        level: Coverage of the interval, also the test level of ``mde``.
        power: Power at which ``mde`` is detected.
        resample_seeds: Redraw the seeds as well as the patients (False: patients only).

    Returns:
        The :class:`PairedDifference`; positive ``difference`` when ``b`` scores lower.

    Raises:
        ArgumentError: ``n_resamples`` below 2, ``level`` or ``power`` outside ``(0, 1)``.
        DataError: Arrays of the wrong shape, labels that are not one-hot, or predictions
            that are not normalised probabilities.
    """
    _check_settings(n_resamples, level, power)
    onehot = _check_onehot(onehot)
    probs_a = _check_probs("probs_a", probs_a, onehot.shape[0])
    probs_b = _check_probs("probs_b", probs_b, onehot.shape[0])
    if probs_a.shape != probs_b.shape:
        raise DataError(
            f"probs_b has shape {probs_b.shape} but probs_a has {probs_a.shape}; "
            "both arms need the same seeds, row s of each from seed s"
        )
    per_seed = _seed_scores(onehot, probs_a) - _seed_scores(onehot, probs_b)
    weights, losses_a = _loss_terms(onehot, probs_a)
    _, losses_b = _loss_terms(onehot, probs_b)
    rng = np.random.default_rng(seed)
    diffs = []
    for seed_counts, patient_counts in _draws(
        rng, n_resamples, probs_a.shape[0], onehot.shape[0], resample_seeds
    ):
        scores_a = _resampled_scores(weights, losses_a, patient_counts)
        scores_b = _resampled_scores(weights, losses_b, patient_counts)
        diffs.append(_seed_mean(seed_counts, scores_a - scores_b))
    resampled = np.concatenate(diffs)
    low, high = _interval(resampled, level)
    se = float(np.std(resampled, ddof=1))
    normal = NormalDist()
    z = normal.inv_cdf(1.0 - (1.0 - level) / 2.0) + normal.inv_cdf(power)
    return PairedDifference(
        difference=float(per_seed.mean()),
        low=low,
        high=high,
        se=se,
        mde=float(z * se),
        wins=int((per_seed > 0).sum()),
        seeds=int(per_seed.size),
    )


def score_interval(
    onehot: np.ndarray,
    probs: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    resample_seeds: bool = True,
) -> tuple[float, float, float]:
    """Mean score over seeds and its two-level bootstrap interval.

    Args:
        onehot: ``(N, 13)`` one-hot labels of the scored patients.
        probs: ``(S, N, 13)`` normalised predictions, one row per seed.
        n_resamples: Number of bootstrap resamples (at least 2).
        seed: Seed of the resampling.
        level: Coverage of the interval.
        resample_seeds: Redraw the seeds as well as the patients (False: patients only).

    Returns:
        ``(mean, low, high)``: the mean over seeds of the score on all patients, and the
        percentile interval of the resampled means.

    Raises:
        ArgumentError: ``n_resamples`` below 2 or ``level`` outside ``(0, 1)``.
        DataError: As :func:`paired_difference`.
    """
    _check_settings(n_resamples, level)
    onehot = _check_onehot(onehot)
    probs = _check_probs("probs", probs, onehot.shape[0])
    weights, losses = _loss_terms(onehot, probs)
    rng = np.random.default_rng(seed)
    means = [
        _seed_mean(seed_counts, _resampled_scores(weights, losses, patient_counts))
        for seed_counts, patient_counts in _draws(
            rng, n_resamples, probs.shape[0], onehot.shape[0], resample_seeds
        )
    ]
    low, high = _interval(np.concatenate(means), level)
    return float(_seed_scores(onehot, probs).mean()), low, high


# --------------------------------------------------------------------------- AUC


def _weighted_auc(truth: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` on every patient resample (Mann-Whitney, ties count half).

    Args:
        truth: ``(N,)`` injured (1 / True) or healthy (0 / False).
        scores: ``(N,)`` predicted injury scores.
        counts: ``(R, N)`` draws per patient.

    Returns:
        ``(R,)`` AUCs of the drawn patients; NaN where they hold a single class.
    """
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    injured = np.asarray(truth, dtype=bool)[order]
    drawn = counts[:, order]
    positives = np.add.reduceat(drawn * injured, starts, axis=1)
    negatives = np.add.reduceat(drawn * ~injured, starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    above = (positives * (below + 0.5 * negatives)).sum(axis=1)
    return np.where(pairs > 0, above / np.where(pairs > 0, pairs, 1.0), np.nan)


def auc_intervals(
    onehot: np.ndarray,
    probs: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    resample_seeds: bool = True,
) -> dict[str, tuple[float, float, float]]:
    """Mean per-target AUC over seeds and its two-level bootstrap interval.

    The AUCs are those of :func:`ctvoco.metrics.rsna.target_auc_arrays`. A resample whose
    patients hold a single class for a target is skipped for that target.

    Args:
        onehot: ``(N, 13)`` one-hot labels of the scored patients.
        probs: ``(S, N, 13)`` normalised predictions, one row per seed.
        n_resamples: Number of bootstrap resamples (at least 2).
        seed: Seed of the resampling.
        level: Coverage of the interval.
        resample_seeds: Redraw the seeds as well as the patients (False: patients only).

    Returns:
        ``{name: (mean, low, high)}`` for each name of :data:`ctvoco.labels.SCORE_COLUMNS`:
        the mean over seeds of the AUC on all patients and the percentile interval of the
        resampled means; NaN where all patients hold a single class (for ``low`` and
        ``high``: where every resample does).

    Raises:
        ArgumentError: ``n_resamples`` below 2 or ``level`` outside ``(0, 1)``.
        DataError: As :func:`paired_difference`.
    """
    _check_settings(n_resamples, level)
    onehot = _check_onehot(onehot)
    probs = _check_probs("probs", probs, onehot.shape[0])
    inputs = [_auc_inputs(onehot, p) for p in probs]
    resampled: dict[str, list[np.ndarray]] = {name: [] for name in SCORE_COLUMNS}
    rng = np.random.default_rng(seed)
    for seed_counts, patient_counts in _draws(
        rng, n_resamples, probs.shape[0], onehot.shape[0], resample_seeds
    ):
        for name in SCORE_COLUMNS:
            aucs = np.stack(
                [_weighted_auc(*pairs[name], patient_counts) for pairs in inputs], axis=1
            )
            valid = ~np.isnan(aucs[:, 0])  # a single class depends on the patients only
            resampled[name].append(_seed_mean(seed_counts[valid], aucs[valid]))
    point = [target_auc_arrays(onehot, p) for p in probs]
    out: dict[str, tuple[float, float, float]] = {}
    for name in SCORE_COLUMNS:
        mean = float(np.mean([auc[name] for auc in point]))
        out[name] = (mean, *_interval(np.concatenate(resampled[name]), level))
    return out


# --------------------------------------------------------------------------- floors


def _constant_score(onehot: np.ndarray, constant: np.ndarray) -> float:
    """Score of predicting the ``(13,)`` ``constant`` for all ``(N, 13)`` patients."""
    return score_arrays(onehot, np.broadcast_to(constant, onehot.shape))["score"]


def floor_intervals(
    onehot: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    grid: int = 4001,
) -> dict[str, tuple[float, float, float]]:
    """The constant floors and their patient-bootstrap intervals.

    Each resample draws ``N`` patients with replacement, refits both constants of
    :func:`ctvoco.metrics.floors.constant_floors` on them and scores them there.

    Args:
        onehot: ``(N, 13)`` one-hot labels of the scored patients.
        n_resamples: Number of bootstrap resamples (at least 2).
        seed: Seed of the resampling.
        level: Coverage of the interval.
        grid: Points per search grid of :func:`ctvoco.metrics.floors.optimal_constant` on
            the resamples (the value on all patients always uses its default).

    Returns:
        ``{"prevalence": (value, low, high), "constant": (value, low, high)}``: the floor
        on all patients (as :func:`~ctvoco.metrics.floors.constant_floors`) and the
        percentile interval of the refitted floors.

    Raises:
        ArgumentError: ``n_resamples`` below 2, ``level`` outside ``(0, 1)`` or ``grid``
            below 3.
        DataError: ``onehot`` not ``(N, 13)`` one-hot labels.
    """
    _check_settings(n_resamples, level)
    if not is_whole_number(grid) or grid < 3:
        raise ArgumentError("grid", f" must be a whole number >= 3; got {grid!r}")
    onehot = _check_onehot(onehot)
    rng = np.random.default_rng(seed)
    n = onehot.shape[0]
    floors = np.empty((n_resamples, 2))
    for k in range(n_resamples):
        drawn = onehot[rng.integers(0, n, size=n)]
        floors[k, 0] = _constant_score(drawn, prevalence_constant(drawn))
        floors[k, 1] = _constant_score(drawn, optimal_constant(drawn, grid=grid))
    values = constant_floors(onehot)
    return {
        name: (float(values[name]), *_interval(floors[:, j], level))
        for j, name in enumerate(("prevalence", "constant"))
    }
