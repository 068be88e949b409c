"""``ctvoco-cv-report``: probability scaling fitted out-of-fold (``--fit-scaling``), and which
rule chose the weights each fold's ``oof.csv`` came from (``oof_from`` in ``metrics.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ctvoco.cli.cv_report import main
from ctvoco.labels import aggregate_predictions
from ctvoco.metrics import rsna_score
from ctvoco.reports.cross_validation import cross_validation_report
from tests.classify.test_scaling import synthetic_oof

N_FOLDS = 3


def write_runs(root: Path, rules: list[str | None], n: int = 450) -> tuple[list[Path], Path]:
    """Fold run folders holding the synthetic OOF (liver predicted too low), split by patient;
    ``rules[k]`` is fold k's ``oof_from`` (``None``: a metrics.json without one)."""
    oof, labels = synthetic_oof(n=n, seed=1)
    labels_csv = root / "train.csv"
    root.mkdir(parents=True, exist_ok=True)
    labels.to_csv(labels_csv, index=False)
    patients = labels["patient_id"].to_numpy()
    files = []
    for fold, rule in enumerate(rules):
        run = root / "sweep" / f"fold{fold}"
        run.mkdir(parents=True)
        mine = patients[fold :: len(rules)]
        oof[oof["patient_id"].isin(mine)].to_csv(run / "oof.csv", index=False)
        (run / "config.yaml").write_text(yaml.safe_dump({"data": {"labels_csv": str(labels_csv)}}))
        record = {"metrics": {}, "checkpoint": "", "patients": len(mine)}
        if rule is not None:
            record["oof_from"] = rule
            record["selected_on_fold"] = rule == "best"
        (run / "metrics.json").write_text(json.dumps(record))
        files.append(run / "oof.csv")
    return files, labels_csv


def test_fit_scaling_reports_the_cross_fitted_score_and_writes_scaling_json(tmp_path, capsys):
    from ctvoco.classify.scaling import apply_scaling, fit_scaling, read_scaling_json

    files, labels_csv = write_runs(tmp_path, ["last"] * N_FOLDS, n=300)
    main([str(tmp_path / "sweep"), "--labels", str(labels_csv), "--fit-scaling"])
    out = capsys.readouterr().out
    labels = pd.read_csv(labels_csv)
    folds = [pd.read_csv(f) for f in files]
    pooled = pd.concat(folds, ignore_index=True)
    before = rsna_score(labels, pooled)["score"]
    # the honest score: each fold scaled with factors fitted on the other folds only
    crossed = []
    for k, fold in enumerate(folds):
        others = pd.concat([f for j, f in enumerate(folds) if j != k], ignore_index=True)
        factors = fit_scaling(others, labels[labels["patient_id"].isin(others["patient_id"])])
        crossed.append(apply_scaling(aggregate_predictions(fold), factors))
    honest = rsna_score(labels, pd.concat(crossed, ignore_index=True))["score"]
    assert honest < before
    assert f"{before:.4f}" in out and f"{honest:.4f}" in out
    assert "optimistic" in out
    written = read_scaling_json(tmp_path / "sweep" / "scaling.json")
    assert written == pytest.approx(fit_scaling(pooled, labels))
    assert written["liver_low"] > 1
    record = json.loads((tmp_path / "sweep" / "scaling.json").read_text())
    assert record["scores"]["unscaled"] == pytest.approx(before)
    assert record["scores"]["cross_fitted"] == pytest.approx(honest)
    assert record["scores"]["in_sample"] <= honest + 1e-9


def test_store_in_writes_the_factors_into_checkpoints(tmp_path, capsys):
    import torch

    from ctvoco.classify.scaling import checkpoint_factors, read_scaling_json

    _, labels_csv = write_runs(tmp_path, ["last"] * N_FOLDS, n=90)
    ckpt = tmp_path / "fold0.ckpt"
    torch.save({"state_dict": {}, "epoch": 0}, ckpt)
    main(
        [
            str(tmp_path / "sweep"),
            "--labels",
            str(labels_csv),
            "--fit-scaling",
            "--store-in",
            str(ckpt),
        ]
    )
    raw = torch.load(ckpt, weights_only=True)
    assert checkpoint_factors(raw, ckpt) == read_scaling_json(tmp_path / "sweep" / "scaling.json")
    assert str(ckpt) in capsys.readouterr().out


def test_the_report_says_which_rule_each_fold_came_from(tmp_path, capsys):
    files, labels_csv = write_runs(tmp_path, ["last"] * N_FOLDS, n=90)
    report = cross_validation_report(files, pd.read_csv(labels_csv))
    assert report["oof_from"].tolist() == ["last"] * N_FOLDS + ["last"] * 3
    main([str(tmp_path / "sweep"), "--labels", str(labels_csv)])
    out = capsys.readouterr().out
    for fold in range(N_FOLDS):
        assert f"fold{fold}: oof_from=last" in out


def test_best_is_reported_as_optimistic(tmp_path, capsys):
    _, labels_csv = write_runs(tmp_path, ["best", "best", None], n=90)
    main([str(tmp_path / "sweep"), "--labels", str(labels_csv)])
    out = capsys.readouterr().out
    assert "fold2: oof_from=best (not recorded" in out
    assert "optimistic" in out


def test_mixed_rules_are_refused_unless_allowed(tmp_path, capsys):
    _, labels_csv = write_runs(tmp_path, ["last", "best", "step:100"], n=90)
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "sweep"), "--labels", str(labels_csv)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "oof_from" in err and "best" in err and "step:100" in err
    assert not (tmp_path / "sweep" / "cv_report.csv").exists()
    main([str(tmp_path / "sweep"), "--labels", str(labels_csv), "--allow-mixed-rules"])
    captured = capsys.readouterr()
    assert "warning" in captured.err and "mix" in captured.err
    assert (tmp_path / "sweep" / "cv_report.csv").is_file()
