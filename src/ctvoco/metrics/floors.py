"""Constant predictors: the floors a model of the competition score has to beat.

A *constant* predicts every patient the same 13 probabilities, shape ``(13,)``, in
:data:`ctvoco.labels.PREDICTION_COLUMNS` order, each target's group summing to 1. Two
constants are scored here, both fitted on the patients they are scored on:

- the *prevalence baseline* (:func:`prevalence_constant`): the class frequencies of the
  patients;
- the *best constant* (:func:`optimal_constant`): the constant with the lowest competition
  score on them.

They differ because of the metric's class weights and of ``any_injury``. Alone, each
target's weighted log loss is lowest at its *weighted* class frequencies (class weight
times count, normalised), not at the plain ones. ``any_injury`` is not predicted on its
own: the metric derives it as ``1 - min`` of the five healthy probabilities, so its loss
depends on the lowest of them, and lowering one target's healthy probability below its own
optimum can pay off in ``any_injury`` (weighted 6 for an injured patient). The best
constant therefore searches that lowest healthy probability; given it, each target's
optimum is closed-form.

All inputs are ``(N, 13)`` one-hot label arrays (e.g. the second item of
:func:`ctvoco.labels.validated_labels`); outputs are ``(13,)`` constants or float scores.
"""

from __future__ import annotations

import math

import numpy as np

from ctvoco.labels import (
    CLASS_WEIGHTS,
    HEALTHY_COLUMNS,
    PREDICTION_COLUMNS,
    SCORE_COLUMNS,
    TARGET_SLICES,
)
from ctvoco.metrics.rsna import EPS, score_arrays

__all__ = ["constant_floors", "optimal_constant", "prevalence_constant"]


def _log(values: np.ndarray | float) -> np.ndarray:
    """``log`` of probabilities clipped as the metric clips them."""
    return np.log(np.clip(values, EPS, 1.0 - EPS))


def _target_loss(mass: np.ndarray, healthy: np.ndarray) -> np.ndarray:
    """Weighted log loss of a constant prediction whose healthy probability is ``healthy``.

    The injured classes share ``1 - healthy`` in proportion to their weighted counts,
    which is optimal for a fixed ``healthy``.

    Args:
        mass: Class weight times patient count per class, shape ``(K,)`` (healthy first).
        healthy: Candidate healthy probabilities, any shape.
    """
    injured = mass[1:].sum()
    loss = -mass[0] * _log(healthy)
    for share in mass[1:]:
        if share > 0:
            loss = loss - share * (_log(1.0 - healthy) + math.log(share / injured))
    return loss / mass.sum()


def _class_mass(onehot: np.ndarray) -> dict[str, np.ndarray]:
    """Per scored target: class weight times patient count per class."""
    mass = {
        target: onehot[:, cols].sum(axis=0) * np.asarray(CLASS_WEIGHTS[target])
        for target, cols in TARGET_SLICES.items()
    }
    injured = (1.0 - onehot[:, HEALTHY_COLUMNS]).max(axis=1)
    counts = np.array([(injured == 0).sum(), (injured == 1).sum()], dtype=np.float64)
    mass["any_injury"] = counts * np.asarray(CLASS_WEIGHTS["any_injury"])
    return mass


def _score_at(mass: dict[str, np.ndarray], lowest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best constant score whose lowest healthy probability is ``lowest`` (vectorised).

    Each target keeps its own optimum (its weighted healthy frequency) if that is above
    ``lowest``, is raised to ``lowest`` otherwise; if every optimum is above ``lowest``,
    the target that loses least is lowered to it. ``any_injury`` is then ``1 - lowest``.

    Returns:
        ``(score, lowered)``: the score per candidate, and the target index lowered to the
        candidate (-1 when none is).
    """
    targets = list(TARGET_SLICES)
    optimum = np.array([mass[t][0] / mass[t].sum() for t in targets])
    at_optimum = np.array([_target_loss(mass[t], optimum[i]) for i, t in enumerate(targets)])
    raised = np.stack(
        [_target_loss(mass[t], np.maximum(optimum[i], lowest)) for i, t in enumerate(targets)]
    )
    lowered = np.stack([_target_loss(mass[t], lowest) for t in targets]) - at_optimum[:, None]
    below = lowest < optimum.min()
    total = np.where(below, at_optimum.sum() + lowered.min(axis=0), raised.sum(axis=0))
    total = total + _target_loss(mass["any_injury"], lowest)  # p(no injury) = lowest
    return total / len(SCORE_COLUMNS), np.where(below, lowered.argmin(axis=0), -1)


def optimal_constant(onehot: np.ndarray, grid: int = 4001) -> np.ndarray:
    """The constant prediction with the lowest competition score on these patients.

    Each target's loss alone is lowest at its weighted class frequencies; ``any_injury``
    (predicted as ``1 - min`` of the five healthy probabilities) couples them, so the
    lowest of the five healthy probabilities is searched on a grid, refined twice.

    Args:
        onehot: ``(N, 13)`` one-hot labels.
        grid: Points per search grid.

    Returns:
        The 13 probabilities, shape ``(13,)``, in :data:`ctvoco.labels.PREDICTION_COLUMNS`
        order, each target's group summing to 1.
    """
    mass = _class_mass(onehot)
    targets = list(TARGET_SLICES)
    optimum = np.array([mass[t][0] / mass[t].sum() for t in targets])
    low, high, best = 0.0, 1.0, float(optimum.min())
    for _ in range(3):
        candidates = np.concatenate([np.linspace(low, high, grid), [best, optimum.min()]])
        scores, _ = _score_at(mass, candidates)
        best = float(candidates[np.argmin(scores)])
        step = (high - low) / (grid - 1)
        low, high = max(0.0, best - 2 * step), min(1.0, best + 2 * step)
    _, lowered = _score_at(mass, np.array([best]))
    constant = np.empty(len(PREDICTION_COLUMNS))
    for i, (target, cols) in enumerate(TARGET_SLICES.items()):
        healthy = best if lowered[0] == i else max(float(optimum[i]), best)
        injured = mass[target][1:]
        split = (
            injured / injured.sum()
            if injured.sum() > 0
            else np.full(injured.size, 1 / injured.size)
        )
        constant[cols] = [healthy, *((1.0 - healthy) * split)]
    return constant


def prevalence_constant(onehot: np.ndarray) -> np.ndarray:
    """The class frequencies of these patients, shape ``(13,)``, from ``(N, 13)`` labels."""
    return onehot.mean(axis=0)


def constant_floors(onehot: np.ndarray) -> dict[str, float]:
    """Scores of constant predictions on these patients, to compare a model with.

    Args:
        onehot: ``(N, 13)`` one-hot labels of the scored patients.

    Returns:
        ``prevalence``: every patient predicted the class frequencies of these patients
        (:func:`prevalence_constant`); ``constant``: the constant with the lowest score on
        them (:func:`optimal_constant`). Both are fitted on the scored patients: floors a
        model has to beat, not estimates.
    """
    n = onehot.shape[0]
    prevalence = np.tile(prevalence_constant(onehot), (n, 1))
    constant = np.tile(optimal_constant(onehot), (n, 1))
    return {
        "prevalence": score_arrays(onehot, prevalence)["score"],
        "constant": score_arrays(onehot, constant)["score"],
    }
