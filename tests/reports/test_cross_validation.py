"""Tests of :mod:`ctvoco.reports.cross_validation` and the ``ctvoco-cv-report`` entry point."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ctvoco.cli.cv_report import main
from ctvoco.errors import UserError
from ctvoco.labels import PREDICTION_COLUMNS, SCORE_COLUMNS, labels_from_classes
from ctvoco.metrics import rsna_score, target_auc
from ctvoco.reports import cross_validation_report, find_oof_files
from ctvoco.reports.cross_validation import labels_for
from ctvoco.reports.cv_markdown import to_markdown

N_FOLDS = 3
PATIENTS_PER_FOLD = 6


def _labels(n: int = N_FOLDS * PATIENTS_PER_FOLD, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    classes = np.stack([rng.integers(0, k, size=n) for k in (2, 2, 3, 3, 3)], axis=1)
    classes[0] = [1, 1, 2, 2, 2]  # every class present
    classes[1] = [0, 0, 1, 1, 1]
    classes[2] = [0, 0, 0, 0, 0]
    return labels_from_classes([1000 + i for i in range(n)], classes)


def _oof(patients: list[int], seed: int, extra_series_for: int | None = None) -> pd.DataFrame:
    """An ``oof.csv`` frame: one row per series, series ids derived from patient ids."""
    rng = np.random.default_rng(seed)
    rows_p = [*patients, *([extra_series_for] if extra_series_for is not None else [])]
    series = [p * 10 for p in patients] + (
        [extra_series_for * 10 + 1] if extra_series_for is not None else []
    )
    values = rng.uniform(0.02, 1.0, size=(len(rows_p), len(PREDICTION_COLUMNS)))
    frame = pd.DataFrame(values, columns=list(PREDICTION_COLUMNS))
    frame.insert(0, "series_id", series)
    frame.insert(0, "patient_id", rows_p)
    return frame


def _write_folds(root: Path, labels: pd.DataFrame, labels_csv: Path | None = None) -> list[Path]:
    """Three fold run folders with disjoint patients, each with oof.csv and config.yaml."""
    patients = labels["patient_id"].tolist()
    paths = []
    for fold in range(N_FOLDS):
        run = root / f"{fold}"
        run.mkdir(parents=True)
        chunk = patients[fold * PATIENTS_PER_FOLD : (fold + 1) * PATIENTS_PER_FOLD]
        _oof(chunk, seed=fold, extra_series_for=chunk[0]).to_csv(run / "oof.csv", index=False)
        data = {"root": str(root / "data"), "labels_csv": str(labels_csv) if labels_csv else None}
        (run / "config.yaml").write_text(yaml.safe_dump({"data": data}))
        paths.append(run / "oof.csv")
    return paths


def _metrics(labels: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    subset = labels[labels["patient_id"].isin(predictions["patient_id"])]
    out = rsna_score(subset, predictions)
    out.update({f"auc_{k}": v for k, v in target_auc(subset, predictions).items()})
    return out


def _assert_row(row: pd.Series, expected: dict[str, float]) -> None:
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(row[key]), key
        else:
            assert row[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_report_has_fold_rows_mean_std_and_pooled(tmp_path):
    labels = _labels()
    files = _write_folds(tmp_path, labels)
    report = cross_validation_report(files, labels)
    assert report["run"].tolist() == [str(f.parent) for f in files] + ["mean", "std", "pooled"]
    metric_columns = [*SCORE_COLUMNS, "score", *(f"auc_{k}" for k in SCORE_COLUMNS)]
    assert set(metric_columns) <= set(report.columns)
    folds = [pd.read_csv(f) for f in files]
    for i, oof in enumerate(folds):
        _assert_row(report.iloc[i], _metrics(labels, oof))
    per_fold = report.iloc[:N_FOLDS][metric_columns].astype(float)
    mean, std = report.iloc[N_FOLDS], report.iloc[N_FOLDS + 1]
    for column in metric_columns:
        assert mean[column] == pytest.approx(per_fold[column].mean(), nan_ok=True)
        assert std[column] == pytest.approx(per_fold[column].std(ddof=1), nan_ok=True)
    scores = per_fold["score"].to_numpy()
    assert std["score"] == pytest.approx(np.std(scores, ddof=1))
    pooled = report.iloc[N_FOLDS + 2]
    concatenated = pd.concat(folds, ignore_index=True)
    expected = rsna_score(labels, concatenated)
    assert pooled["score"] == pytest.approx(expected["score"], rel=1e-12)
    _assert_row(pooled, _metrics(labels, concatenated))
    # the pooled score is not the mean of the fold scores in general
    assert pooled["score"] != pytest.approx(mean["score"], rel=1e-9)


def test_pooled_covers_only_predicted_patients(tmp_path):
    labels = _labels(n=N_FOLDS * PATIENTS_PER_FOLD + 4)  # 4 labelled patients never predicted
    files = _write_folds(tmp_path, labels)
    report = cross_validation_report(files, labels)
    concatenated = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    subset = labels[labels["patient_id"].isin(concatenated["patient_id"])]
    assert report.iloc[-1]["score"] == pytest.approx(rsna_score(subset, concatenated)["score"])


def test_overlapping_folds_raise_user_error(tmp_path):
    labels = _labels()
    files = _write_folds(tmp_path, labels)
    first, second = pd.read_csv(files[0]), pd.read_csv(files[1])
    pd.concat([second, first.iloc[:2]], ignore_index=True).to_csv(files[1], index=False)
    with pytest.raises(UserError, match="several folds"):
        cross_validation_report(files, labels)


def test_a_patient_in_two_folds_with_different_series_raises_user_error(tmp_path):
    labels = _labels()
    files = _write_folds(tmp_path, labels)
    second = pd.read_csv(files[1])
    intruder = second.iloc[[0]].copy()
    intruder["patient_id"] = labels["patient_id"].iloc[3]  # a fold-0 patient
    intruder["series_id"] = 999999  # another of its series
    pd.concat([second, intruder], ignore_index=True).to_csv(files[1], index=False)
    with pytest.raises(UserError, match="several folds"):
        cross_validation_report(files, labels)


def test_find_oof_files(tmp_path):
    files = _write_folds(tmp_path / "multirun", _labels())
    (tmp_path / "multirun" / "0" / "nested").mkdir()
    (tmp_path / "multirun" / "0" / "nested" / "other.csv").write_text("x\n")
    assert find_oof_files(tmp_path / "multirun") == sorted(files)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no oof\.csv"):
        find_oof_files(tmp_path / "empty")


def test_labels_for_reads_the_run_config(tmp_path):
    files = _write_folds(tmp_path, _labels(), labels_csv=tmp_path / "labels.csv")
    assert labels_for(files[0].parent) == tmp_path / "labels.csv"
    run = tmp_path / "other"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": "/data/rsna"}}))
    assert labels_for(run) == Path("/data/rsna/train.csv")


def test_to_markdown_table(tmp_path):
    labels = _labels()
    report = cross_validation_report(_write_folds(tmp_path, labels), labels)
    text = to_markdown(report)
    lines = text.strip().splitlines()
    aucs = [f"auc_{k}" for k in SCORE_COLUMNS]
    assert (
        lines[0]
        == "| " + " | ".join(["fold", "run", "patients", "score", *SCORE_COLUMNS, *aucs]) + " |"
    )
    assert len(lines) == 2 + len(report)
    assert lines[2].startswith("| ? | 0 | 6 | ")  # no data.fold recorded in config.yaml
    assert lines[-1].startswith("| pooled |  | 18 | ")
    assert f"| {report.iloc[-1]['score']:.4f} |" in lines[-1]


# --------------------------------------------------------------------------- main(argv)
def test_main_writes_csv_and_markdown(tmp_path, capsys):
    labels = _labels()
    labels_csv = tmp_path / "train.csv"
    labels.to_csv(labels_csv, index=False)
    runs = tmp_path / "multirun"
    files = _write_folds(runs, labels)
    main([str(runs), "--labels", str(labels_csv)])
    written = pd.read_csv(runs / "cv_report.csv")
    expected = cross_validation_report(files, labels)
    assert written["run"].tolist() == expected["run"].tolist()
    np.testing.assert_allclose(written["score"], expected["score"])
    markdown = (runs / "cv_report.md").read_text()
    assert to_markdown(expected) in markdown
    out = capsys.readouterr().out
    assert "cv_report.csv" in out
    assert "| pooled |" in out


def test_main_reads_the_labels_from_the_first_run_config(tmp_path):
    labels = _labels()
    data_root = tmp_path / "multirun" / "data"
    data_root.mkdir(parents=True)
    labels.to_csv(data_root / "train.csv", index=False)
    _write_folds(tmp_path / "multirun", labels)  # config.yaml: data.root, no labels_csv
    main([str(tmp_path / "multirun")])
    report = pd.read_csv(tmp_path / "multirun" / "cv_report.csv")
    assert report["run"].tolist()[-3:] == ["mean", "std", "pooled"]


def test_main_without_oof_files_exits_2(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "runs")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "ctvoco-cv-report: error:" in err
    assert "no oof.csv" in err
    assert not (tmp_path / "runs" / "cv_report.csv").exists()


def test_main_with_overlapping_folds_exits_2(tmp_path, capsys):
    labels = _labels()
    labels_csv = tmp_path / "train.csv"
    labels.to_csv(labels_csv, index=False)
    files = _write_folds(tmp_path / "runs", labels)
    pd.concat([pd.read_csv(files[0]), pd.read_csv(files[1])]).to_csv(files[1], index=False)
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "runs"), "--labels", str(labels_csv)])
    assert exc.value.code == 2
    assert "several folds" in capsys.readouterr().err


def test_main_without_arguments_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: ctvoco-cv-report" in capsys.readouterr().err
