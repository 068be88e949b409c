"""The cross-validation report document: fold rows, missing folds, plots, fold records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from ctvoco.cli.cv_report import main
from ctvoco.errors import UserError
from ctvoco.labels import SCORE_COLUMNS
from ctvoco.reports.cross_validation import (
    FoldRun,
    cross_validation_report,
    fold_run,
    labels_for,
)
from tests.classify.test_scaling import synthetic_oof

N_FOLDS = 5


def write_runs(root: Path, folds: list[int], n: int = 200) -> Path:
    """Fold run folders ``root/sweep/<k>`` for the fold ids ``folds`` of a ``N_FOLDS``-fold
    split, each with ``oof.csv``, ``config.yaml`` (data.fold, data.n_folds) and
    ``metrics.json``; returns the labels CSV (all patients)."""
    oof, labels = synthetic_oof(n=n, seed=3)
    root.mkdir(parents=True, exist_ok=True)
    labels_csv = root / "train.csv"
    labels.to_csv(labels_csv, index=False)
    patients = labels["patient_id"].to_numpy()
    for fold in folds:
        run = root / "sweep" / str(fold)
        run.mkdir(parents=True)
        mine = patients[fold::N_FOLDS]
        oof[oof["patient_id"].isin(mine)].to_csv(run / "oof.csv", index=False)
        data = {"labels_csv": str(labels_csv), "fold": fold, "n_folds": N_FOLDS, "fold_seed": 42}
        (run / "config.yaml").write_text(yaml.safe_dump({"data": data}))
        record = {"metrics": {}, "oof_from": "last", "selected_on_fold": False}
        (run / "metrics.json").write_text(json.dumps(record))
    return labels_csv


# --------------------------------------------------------------------------- fold rows


def test_rows_carry_the_fold_ids_and_per_target_losses_and_aucs(tmp_path):
    labels_csv = write_runs(tmp_path, [3, 0, 1])
    labels = pd.read_csv(labels_csv)
    files = sorted((tmp_path / "sweep").rglob("oof.csv"))
    report = cross_validation_report(files, labels)
    assert report["fold"].tolist()[:3] == [0, 1, 3]
    assert report["run"].tolist()[-1] == "pooled"
    main([str(tmp_path / "sweep"), "--labels", str(labels_csv)])
    markdown = (tmp_path / "sweep" / "cv_report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| fold |"))
    for name in SCORE_COLUMNS:
        assert f" {name} |" in header and f" auc_{name} |" in header
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    for fold in (0, 1, 3):
        row = next(r for r in rows if r.startswith(f"| {fold} |"))
        score = report.loc[report["fold"] == fold, "score"].item()
        assert f"{score:.4f}" in row
    pooled = next(r for r in rows if r.startswith("| pooled |"))
    assert f"{report.iloc[-1]['score']:.4f}" in pooled


# --------------------------------------------------------------------------- missing folds


def test_missing_folds_are_named_on_stderr_and_at_the_top_of_the_report(tmp_path, capsys):
    labels_csv = write_runs(tmp_path, [0, 1], n=100)
    main([str(tmp_path / "sweep"), "--labels", str(labels_csv)])
    err = capsys.readouterr().err
    assert "missing" in err and "2, 3, 4" in err and "0, 1" in err
    assert "40 of 100" in err  # patients covered by the pooled score
    markdown = (tmp_path / "sweep" / "cv_report.md").read_text()
    top = "\n".join(markdown.splitlines()[:6])
    assert "2, 3, 4" in top and "missing" in top


def test_complete_folds_give_no_missing_warning(tmp_path, capsys):
    labels_csv = write_runs(tmp_path, list(range(N_FOLDS)), n=100)
    main([str(tmp_path / "sweep"), "--labels", str(labels_csv)])
    assert "missing" not in capsys.readouterr().err
    assert "missing" not in (tmp_path / "sweep" / "cv_report.md").read_text()


# --------------------------------------------------------------------------- plots


def test_roc_and_calibration_pngs_are_written_and_linked(tmp_path):
    labels_csv = write_runs(tmp_path, [0, 1, 2], n=100)
    main([str(tmp_path / "sweep"), "--labels", str(labels_csv)])
    markdown = (tmp_path / "sweep" / "cv_report.md").read_text()
    for name in ("cv_roc.png", "cv_calibration.png"):
        path = tmp_path / "sweep" / name
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG"
        assert f"]({name})" in markdown


# --------------------------------------------------------------------------- fold records


def test_two_runs_of_one_fold_are_refused(tmp_path):
    labels_csv = write_runs(tmp_path, [0, 1], n=50)
    config = tmp_path / "sweep" / "1" / "config.yaml"
    record = yaml.safe_load(config.read_text())
    record["data"]["fold"] = 0
    config.write_text(yaml.safe_dump(record))
    files = sorted((tmp_path / "sweep").rglob("oof.csv"))
    with pytest.raises(UserError, match="both validated fold 0"):
        cross_validation_report(files, pd.read_csv(labels_csv))


def test_the_fold_is_read_from_the_hydra_record_without_config_yaml(tmp_path):
    write_runs(tmp_path, [2], n=50)
    run = tmp_path / "sweep" / "2"
    (run / ".hydra").mkdir()
    (run / "config.yaml").rename(run / ".hydra" / "config.yaml")
    assert fold_run(run / "oof.csv") == FoldRun(run, 2, N_FOLDS)
    assert labels_for(run) == tmp_path / "train.csv"
    (run / ".hydra" / "config.yaml").unlink()
    assert fold_run(run / "oof.csv") == FoldRun(run, None, None)
    with pytest.raises(UserError, match="--labels"):
        labels_for(run)
