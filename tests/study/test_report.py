"""The study's tables: scores beside both floors, paired differences, AUCs, and the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ctvoco.labels import PREDICTION_COLUMNS, TARGET_CLASSES, labels_from_classes
from ctvoco.metrics.bootstrap import patient_arrays
from ctvoco.metrics.floors import constant_floors
from ctvoco.study.arms import ARMS
from ctvoco.study.design import plan_runs
from ctvoco.study.report import collect, markdown, plot, summary_tables

N = 40


def cohort_labels(rng: np.random.Generator) -> pd.DataFrame:
    classes = np.stack([rng.integers(0, len(c), N) for c in TARGET_CLASSES.values()], axis=1)
    classes[:, 3] = 0  # no liver injury among the evaluated patients: its AUC is undefined
    return labels_from_classes(np.arange(100, 100 + N), classes)


def predictions(labels: pd.DataFrame, skill: float, rng: np.random.Generator) -> pd.DataFrame:
    """``skill`` of the way from uniform noise to the truth."""
    truth = labels[list(PREDICTION_COLUMNS)].to_numpy(dtype=float)
    noise = rng.random(truth.shape)
    frame = pd.DataFrame(
        skill * truth + (1 - skill) * noise + 0.05, columns=list(PREDICTION_COLUMNS)
    )
    frame.insert(0, "patient_id", labels["patient_id"].to_numpy())
    return frame


def test_a_better_arm_shows_a_positive_paired_difference_beside_the_floors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = cohort_labels(rng)
    _, runs = plan_runs([ARMS["scratch"], ARMS["voco"]], [0.5], [0, 1, 2], [0])
    preds = {r: predictions(labels, 0.8 if r.arm.voco else 0.1, rng) for r in runs}
    extra = {r: {"labelled_patients": 12, "steps_trained": 100, "selected_step": 50} for r in runs}
    results = collect(runs, preds, labels, extra)
    assert results.probs[("voco", 0.5)].shape == (3, N, 13)
    tables = summary_tables(results, n_resamples=300)
    difference = tables["differences"].iloc[0]
    assert (difference["reference"], difference["treatment"]) == ("scratch", "voco")
    assert difference["low"] > 0 and difference["wins"] == 3 and difference["mde"] > 0
    scores = tables["scores"].set_index("arm")
    assert scores.loc["voco", "score"] < scores.loc["scratch", "score"]
    assert (
        scores.loc["voco", "score_low"]
        <= scores.loc["voco", "score"]
        <= scores.loc["voco", "score_high"]
    )
    floors = tables["floors"].set_index("floor")["score"]
    onehot, _ = patient_arrays(labels, preds[runs[0]])
    assert floors.to_dict() == constant_floors(onehot)
    text = markdown(tables, N)
    assert "| floor | best constant |" in text and "| floor | prevalence baseline |" in text
    assert "| 50% | scratch → voco |" in text and "3 of 3" in text
    assert "n/a" in text  # the liver AUC
    assert plot(tables, tmp_path / "study.png").stat().st_size > 10_000


def test_runs_that_predicted_other_patients_are_refused() -> None:
    import pytest

    from ctvoco.errors import DataError

    rng = np.random.default_rng(1)
    labels = cohort_labels(rng)
    _, runs = plan_runs([ARMS["scratch"]], [1.0], [0, 1], [0])
    preds = {
        runs[0]: predictions(labels, 0.5, rng),
        runs[1]: predictions(labels.iloc[:-1], 0.5, rng),
    }
    with pytest.raises(DataError, match="predicted other patients than the first run"):
        collect(runs, preds, labels, {})
