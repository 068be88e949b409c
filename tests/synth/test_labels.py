"""Tests of ctvoco.synth.labels: the five targets, their rows and their prevalence."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.labels import LABEL_COLUMNS, TARGET_CLASSES, TARGETS
from ctvoco.synth import (
    DEFAULT_PREVALENCE,
    InjuryLabels,
    draw_injury_labels,
)


def test_to_row_is_one_hot_in_train_csv_order():
    labels = InjuryLabels(bowel=1, extravasation=0, kidney=2, liver=0, spleen=1)
    row = labels.to_row()
    assert tuple(row) == LABEL_COLUMNS
    assert row["bowel_injury"] == 1 and row["bowel_healthy"] == 0
    assert row["kidney_high"] == 1 and row["kidney_low"] == 0 and row["kidney_healthy"] == 0
    assert row["liver_healthy"] == 1
    assert row["spleen_low"] == 1
    for target in TARGETS:
        assert sum(row[f"{target}_{c}"] for c in TARGET_CLASSES[target]) == 1
    assert row["any_injury"] == 1 and labels.any_injury
    assert labels.as_classes() == (1, 0, 2, 0, 1)
    assert InjuryLabels.from_row(row) == labels
    assert InjuryLabels.from_classes(labels.as_classes()) == labels


def test_healthy_labels_have_no_injury():
    labels = InjuryLabels()
    assert not labels.any_injury
    assert labels.to_row()["any_injury"] == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"bowel": 2}, ValueError),
        ({"extravasation": -1}, ValueError),
        ({"liver": 3}, ValueError),
        ({"spleen": 1.0}, TypeError),
        ({"kidney": True}, TypeError),
    ],
)
def test_labels_are_validated(kwargs, error):
    with pytest.raises(error):
        InjuryLabels(**kwargs)


def test_from_row_rejects_non_one_hot():
    row = InjuryLabels().to_row()
    row["liver_low"] = 1
    with pytest.raises(ValueError, match="one-hot"):
        InjuryLabels.from_row(row)


def test_draw_injury_labels_follows_prevalence():
    rng = np.random.default_rng(0)
    draws = np.array([draw_injury_labels(rng).as_classes() for _ in range(3000)])
    for j, target in enumerate(TARGETS):
        freq = np.bincount(draws[:, j], minlength=len(TARGET_CLASSES[target])) / len(draws)
        np.testing.assert_allclose(freq, DEFAULT_PREVALENCE[target], atol=0.03)


@pytest.mark.parametrize(
    "prevalence",
    [
        {t: p for t, p in DEFAULT_PREVALENCE.items() if t != "liver"},
        {**DEFAULT_PREVALENCE, "liver": (0.5, 0.5)},
        {**DEFAULT_PREVALENCE, "bowel": (0.5, 0.6)},
        {**DEFAULT_PREVALENCE, "spleen": (1.2, -0.1, -0.1)},
        {**DEFAULT_PREVALENCE, "lungs": (1.0, 0.0)},
    ],
)
def test_draw_injury_labels_rejects_bad_prevalence(prevalence):
    with pytest.raises(ValueError):
        draw_injury_labels(np.random.default_rng(0), prevalence)
