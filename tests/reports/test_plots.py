"""Tests of the evaluation plots and the fold evaluation files (:mod:`ctvoco.reports`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from ctvoco.labels import PREDICTION_COLUMNS, SCORE_COLUMNS, TARGETS, labels_from_classes
from ctvoco.metrics import score_predictions, target_auc
from ctvoco.reports import plot_calibration, plot_confusion, plot_roc
from ctvoco.reports.evaluation import write_evaluation
from ctvoco.reports.plots import injury_scores

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Ten patients; bowel is healthy for everyone (a target with a single class).
PATIENTS = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
CLASSES = np.array(
    [
        # bowel, extravasation, kidney, liver, spleen
        [0, 0, 0, 0, 0],
        [0, 1, 0, 1, 2],
        [0, 0, 1, 0, 0],
        [0, 1, 2, 2, 1],
        [0, 0, 0, 0, 0],
        [0, 0, 2, 1, 0],
        [0, 1, 0, 0, 1],
        [0, 0, 1, 2, 2],
        [0, 0, 0, 0, 0],
        [0, 1, 2, 1, 1],
    ]
)


def _labels() -> pd.DataFrame:
    return labels_from_classes(PATIENTS, CLASSES)


def _predictions(seed: int = 0) -> pd.DataFrame:
    """Series-level predictions; patients 12 and 15 have two series each."""
    rng = np.random.default_rng(seed)
    patients = [*PATIENTS, 12, 15]
    series = [100 + i for i in range(len(patients))]
    values = rng.uniform(0.05, 1.0, size=(len(patients), len(PREDICTION_COLUMNS)))
    frame = pd.DataFrame(values, columns=list(PREDICTION_COLUMNS))
    frame.insert(0, "series_id", series)
    frame.insert(0, "patient_id", patients)
    return frame


def _check_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 2000
    with Image.open(path) as image:
        width, height = image.size
    assert width > 100
    assert height > 100


@pytest.mark.parametrize("plot", [plot_roc, plot_confusion, plot_calibration])
def test_plots_write_non_empty_pngs(plot, tmp_path):
    path = tmp_path / "nested" / f"{plot.__name__}.png"
    assert plot(_labels(), _predictions(), path) == path
    _check_png(path)


@pytest.mark.parametrize("plot", [plot_roc, plot_confusion, plot_calibration])
def test_plots_accept_one_row_per_patient_and_string_paths(plot, tmp_path):
    per_patient = _predictions().drop_duplicates("patient_id").drop(columns="series_id")
    path = plot(_labels(), per_patient, str(tmp_path / "plot.png"))
    _check_png(Path(path))


def test_calibration_with_every_target_single_class(tmp_path):
    labels = labels_from_classes(PATIENTS[:3], np.zeros((3, 5), dtype=int))
    predictions = _predictions()
    predictions = predictions[predictions["patient_id"].isin(PATIENTS[:3])]
    for plot in (plot_roc, plot_calibration, plot_confusion):
        _check_png(plot(labels, predictions, tmp_path / f"{plot.__name__}.png"))


def test_injury_scores_truth_and_scores():
    truth, score = injury_scores(_labels(), _predictions())
    assert list(truth.columns) == list(SCORE_COLUMNS) == list(score.columns)
    assert truth.index.tolist() == PATIENTS
    assert (truth["bowel"] == 0).all()
    np.testing.assert_array_equal(truth["kidney"], (CLASSES[:, 2] > 0).astype(int))
    np.testing.assert_array_equal(truth["any_injury"], (CLASSES > 0).any(axis=1).astype(int))
    # patient 12: two series, max per column, then the group is normalised
    preds = _predictions().set_index("patient_id")
    liver = preds.loc[[12], ["liver_healthy", "liver_low", "liver_high"]].max()
    assert score.loc[12, "liver"] == pytest.approx(1 - liver["liver_healthy"] / liver.sum())
    assert ((score >= 0) & (score <= 1)).all().all()


def test_injury_scores_give_the_metric_auc():
    labels, predictions = _labels(), _predictions(seed=3)
    truth, score = injury_scores(labels, predictions)
    expected = target_auc(labels, predictions)
    for target in SCORE_COLUMNS:
        if truth[target].nunique() < 2:
            assert math.isnan(expected[target])
        else:
            assert roc_auc_score(truth[target], score[target]) == pytest.approx(expected[target])


# --------------------------------------------------------------------------- write_evaluation
def _nan_equal(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12)


def test_write_evaluation_writes_every_file_and_scores(tmp_path):
    labels = pd.concat(
        [_labels(), labels_from_classes([99], np.array([[1, 1, 1, 1, 1]]))], ignore_index=True
    )  # patient 99 is labelled but not predicted
    predictions = _predictions()
    run = tmp_path / "run"
    metrics = write_evaluation(predictions, labels, run, checkpoint="best.ckpt")
    for name in ("oof.csv", "metrics.json", "metrics.md"):
        assert (run / name).is_file()
        assert (run / name).stat().st_size > 0
    for name in ("roc.png", "confusion.png", "calibration.png"):
        _check_png(run / name)
    expected = score_predictions(_labels(), predictions)
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert _nan_equal(metrics[key], value), key
    assert math.isnan(metrics["auc_bowel"])  # single class
    record = json.loads((run / "metrics.json").read_text())
    assert record["checkpoint"] == "best.ckpt"
    assert record["patients"] == len(PATIENTS)
    for key, value in expected.items():
        assert _nan_equal(float(record["metrics"][key]), value), key
    oof = pd.read_csv(run / "oof.csv")
    pd.testing.assert_frame_equal(oof, predictions, check_dtype=False)
    markdown = (run / "metrics.md").read_text()
    assert markdown.startswith("| metric | value |")
    assert f"| score | {expected['score']:.4f} |" in markdown
    for name in (*TARGETS, "any_injury"):
        assert f"| {name} | " in markdown
        assert f"| auc_{name} | " in markdown


def test_write_evaluation_rejects_unlabelled_predictions(tmp_path):
    predictions = _predictions()
    predictions.loc[0, "patient_id"] = 12345
    with pytest.raises(ValueError, match="12345"):
        write_evaluation(predictions, _labels(), tmp_path)
