"""The demo report: results table, sample slices, curves and ROC from a run's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.cli.demo import results_table
from ctvoco.cli.demo_paths import DemoPaths
from ctvoco.cli.demo_report import write_demo_report
from ctvoco.labels import PREDICTION_COLUMNS, prevalence_predictions
from tests.data.conftest import label_row

LABELS = pd.DataFrame(
    [label_row(11, liver=2), label_row(12), label_row(13, bowel=1), label_row(14, spleen=1)]
)


def fake_run(root: Path) -> DemoPaths:
    paths = DemoPaths(root)
    rng = np.random.default_rng(0)
    cache = VolumeCache(paths.predict_cache)
    for pid in LABELS["patient_id"]:
        key = f"{pid}_{pid + 100}"
        cache.write(key, rng.integers(0, 256, size=(8, 32, 32), dtype=np.uint8))
        cache.write_record(
            {"key": key, "patient_id": str(pid), "series_id": str(pid + 100), "status": "ok"}
        )
    paths.pretrain.mkdir(parents=True)
    pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "train/loss": [0.5, 0.3, 0.2],
            "val/loss": [0.5, 0.35, 0.25],
            "val/position_mae": [0.14, 0.08, 0.05],
            "val/position_mae_trivial": [0.146] * 3,
        }
    ).to_csv(paths.pretrain / "metrics.csv", index=False)
    for init in ("voco", "scratch"):
        paths.finetune(init).mkdir(parents=True)
        pd.DataFrame(
            {"epoch": [0, 1, 2], "train/loss": [4.0, 3.5, 3.0], "val/score": [1.0, None, 0.8]}
        ).to_csv(paths.finetune(init) / "metrics.csv", index=False)
    return paths


def test_report_has_the_table_and_every_figure(tmp_path: Path) -> None:
    paths = fake_run(tmp_path)
    good = LABELS[["patient_id", *PREDICTION_COLUMNS]].astype(float)
    good[list(PREDICTION_COLUMNS)] = good[list(PREDICTION_COLUMNS)].clip(0.05, 0.95)
    submissions = {"voco": good, "scratch": prevalence_predictions(LABELS, LABELS["patient_id"])}
    table = results_table(LABELS, submissions)
    report = write_demo_report(paths, LABELS, submissions, table)

    text = report.read_text()
    for figure in ("samples.png", "pretraining.png", "finetuning.png", "roc.png"):
        assert f"]({figure})" in text, figure
        assert (report.parent / figure).stat().st_size > 5_000, figure
    assert "| voco |" in text and "| scratch |" in text
    saved = pd.read_csv(report.parent / "results.csv", index_col=0)
    assert saved.loc["voco", "score"] < saved.loc["scratch", "score"]


def test_report_leaves_out_figures_whose_inputs_are_missing(tmp_path: Path) -> None:
    paths = DemoPaths(tmp_path)
    submissions = {"voco": prevalence_predictions(LABELS, LABELS["patient_id"])}
    report = write_demo_report(paths, LABELS, submissions, results_table(LABELS, submissions))
    text = report.read_text()
    assert "roc.png" in text
    assert "samples.png" not in text and "pretraining.png" not in text
