"""Constant-prediction floors of the competition score (:mod:`ctvoco.metrics.floors`)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ctvoco.labels import (
    CLASS_WEIGHTS,
    PREDICTION_COLUMNS,
    TARGET_SLICES,
    labels_from_classes,
    prevalence_predictions,
    validated_labels,
)
from ctvoco.metrics import rsna_score
from ctvoco.metrics.bootstrap import patient_arrays
from ctvoco.metrics.floors import constant_floors, optimal_constant
from ctvoco.metrics.rsna import score_arrays
from tests.classify.test_scaling import synthetic_oof


def _constant_frame(ids: list[int], constant: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(np.tile(constant, (len(ids), 1)), columns=list(PREDICTION_COLUMNS))
    frame.insert(0, "patient_id", ids)
    return frame


def test_the_best_constant_is_no_worse_than_the_prevalence_baseline():
    oof, labels = synthetic_oof(n=300, seed=5)
    floors = constant_floors(patient_arrays(labels, oof)[0])
    prevalence = prevalence_predictions(labels, labels["patient_id"])
    assert floors["prevalence"] == pytest.approx(rsna_score(labels, prevalence)["score"])
    assert floors["constant"] < floors["prevalence"]
    _, onehot = validated_labels(labels)
    constant = optimal_constant(onehot)
    ids = labels["patient_id"].tolist()
    assert rsna_score(labels, _constant_frame(ids, constant))["score"] == pytest.approx(
        floors["constant"], rel=1e-12
    )
    # no better than the weighted class frequencies of each target, which ignore any_injury
    weighted = np.empty(len(PREDICTION_COLUMNS))
    for target, cols in TARGET_SLICES.items():
        mass = onehot[:, cols].sum(axis=0) * np.asarray(CLASS_WEIGHTS[target])
        weighted[cols] = mass / mass.sum()
    frequency = rsna_score(labels, _constant_frame(ids, weighted))["score"]
    assert floors["constant"] <= frequency + 1e-12


def test_the_best_constant_matches_a_brute_force_search():
    # bowel / extravasation injured for some patients; the organs are always healthy, so
    # a constant is two numbers: the bowel and extravasation injury probabilities
    classes = np.array(
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
        + [[0, 0, 0, 0, 0]] * 3
    )
    ids = list(range(len(classes)))
    labels = labels_from_classes(ids, classes)
    _, onehot = validated_labels(labels)
    best = np.inf
    grid = np.linspace(0.004, 0.996, 125)
    base = np.zeros(len(PREDICTION_COLUMNS))
    for target in ("kidney", "liver", "spleen"):
        base[TARGET_SLICES[target].start] = 1.0
    for bowel, extravasation in itertools.product(grid, grid):
        probs = base.copy()
        probs[0:2] = [1 - bowel, bowel]
        probs[2:4] = [1 - extravasation, extravasation]
        score = score_arrays(onehot, np.tile(probs, (len(ids), 1)))["score"]
        best = min(best, score)
    found = score_arrays(onehot, np.tile(optimal_constant(onehot), (len(ids), 1)))["score"]
    assert found <= best + 1e-12
    assert best - found < 1e-3
