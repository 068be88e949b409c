"""``ctvoco-demo``: stage bookkeeping, the results table, and (slow) the whole demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ctvoco.cli.demo import results_table
from ctvoco.cli.demo_paths import DemoPaths
from ctvoco.labels import PREDICTION_COLUMNS, prevalence_predictions
from ctvoco.metrics.rsna import rsna_score
from tests.data.conftest import label_row

LABELS = pd.DataFrame(
    [label_row(1, liver=2), label_row(2), label_row(3, bowel=1), label_row(4, spleen=1)]
)


def test_finetuning_counts_as_done_only_once_its_evaluation_is_written(tmp_path: Path) -> None:
    paths = DemoPaths(tmp_path)
    (paths.finetune("voco") / "checkpoints").mkdir(parents=True)
    (paths.finetune("voco") / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert not paths.finetuned("voco")
    (paths.finetune("voco") / "metrics.json").write_text("{}")
    assert paths.finetuned("voco")
    assert not paths.finetuned("scratch")


def test_predictions_use_the_checkpoint_selected_on_validation(tmp_path: Path) -> None:
    paths = DemoPaths(tmp_path)
    folder = paths.finetune("voco") / "checkpoints"
    folder.mkdir(parents=True)
    assert paths.checkpoint("voco") is None
    (folder / "last.ckpt").write_bytes(b"x")
    assert paths.checkpoint("voco") == folder / "last.ckpt"  # a run that never validated
    (folder / "best-epoch004-step0000100.ckpt").write_bytes(b"x")
    assert paths.checkpoint("voco") == folder / "best-epoch004-step0000100.ckpt"


def test_results_table_scores_each_init_with_the_competition_metric() -> None:
    columns = list(PREDICTION_COLUMNS)
    perfect = LABELS[["patient_id", *columns]].astype(float)
    perfect[columns] = perfect[columns].clip(0.02, 0.98)
    prevalence = prevalence_predictions(LABELS, LABELS["patient_id"])
    table = results_table(LABELS, {"voco": perfect, "scratch": prevalence})
    assert list(table.index) == ["voco", "scratch"]
    assert table.loc["scratch", "score"] == pytest.approx(rsna_score(LABELS, prevalence)["score"])
    assert table.loc["voco", "score"] < table.loc["scratch", "score"]
    for target in ("bowel", "liver", "spleen", "any_injury"):  # the targets with injuries
        assert table.loc["voco", target] < table.loc["scratch", target]
    assert table.loc["voco", "auc_any_injury"] == 1.0
    assert table.loc["scratch", "auc_liver"] == 0.5


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_a_rerun_reuses_every_stage(tmp_path: Path) -> None:
    small = [
        "--set=synthetic.n_patients=16",
        "--set=synthetic.n_test=4",
        "--set=synthetic.n_flare=4",
        "--set=trainer.max_epochs=1",
        "--set=data.num_workers=0",
    ]
    demo = [sys.executable, "-m", "ctvoco.cli.demo", "--root", str(tmp_path / "demo"), *small]
    first = subprocess.run(demo, capture_output=True, text=True, timeout=1200, check=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "held-out synthetic patients" in first.stdout
    report = tmp_path / "demo" / "report"
    for name in ("report.md", "results.csv", "samples.png", "pretraining.png", "roc.png"):
        assert (report / name).stat().st_size > 0, name
    table = pd.read_csv(report / "results.csv", index_col=0)
    assert list(table.index) == ["voco", "scratch"]
    assert table["score"].between(0, 10).all()

    again = subprocess.run(demo, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("done before, reused") == 5
