"""The installed programs end to end on a tiny synthetic cohort, as a user runs them.

synth -> preprocess (2 workers, 2 shards) -> pretrain -> finetune from the exported backbone
-> cross-validation report -> predict a submission for the held-out patients.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from ctvoco.labels import PREDICTION_COLUMNS, TARGETS, target_columns
from ctvoco.metrics import rsna_score

BIN = Path(sys.executable).parent
TINY_PRETRAIN = [
    "model.module.backbone=test_efficientnet",
    "model.module.head_hidden=64",
    "model.module.head_out=32",
    "model.module.scheduler.warmup_steps=2",
    "model.views.crop_size=16",
    "model.views.grid=2",
    "model.views.num_slices=4",
    "model.views.depth=8",
    "trainer.max_epochs=2",
    "logger=csv",
]
TINY_FINETUNE = [
    "model.module.backbone=test_efficientnet",
    "model.module.hidden=16",
    "model.views.num_slices=8",
    "model.views.crop=48",
    "trainer.max_epochs=2",
    "logger=csv",
]


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.mark.slow
def test_synth_preprocess_pretrain_finetune_predict(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    run(
        "ctvoco-synth",
        f"root={cohort}",
        "n_patients=10",
        "n_test=3",
        "n_flare=4",
        "shape=[24,80,80]",
        "spacing=[10.0,4.4,4.4]",
        f"paths.output_dir={tmp_path / 'synth_run'}",
        cwd=tmp_path,
    )
    rsna, cache = cohort / "rsna", tmp_path / "cache" / "rsna"
    shape = "data.preprocess.shape=[16,64,64]"
    for shard in ("0/2", "1/2"):
        run(
            "ctvoco-preprocess",
            f"data.root={rsna}",
            f"data.cache_dir={cache}",
            shape,
            "num_workers=2",
            f"shard={shard}",
            f"paths.output_dir={tmp_path / 'pre_run'}",
            cwd=tmp_path,
        )
    manifest = pd.read_csv(cache / "manifest.csv")
    assert (manifest["status"] == "ok").all() and len(manifest) >= 10
    again = run(
        "ctvoco-preprocess",
        f"data.root={rsna}",
        f"data.cache_dir={cache}",
        shape,
        f"paths.output_dir={tmp_path / 'pre_run2'}",
        cwd=tmp_path,
    )
    assert "complete, nothing to do" in again.stdout

    pretrain_dir = tmp_path / "pretrain"
    result = run(
        "ctvoco-pretrain",
        "data=rsna",
        f"data.root={rsna}",
        f"data.cache_dir={cache}",
        shape,
        "data.exclude_folds=[0]",
        "data.num_workers=0",
        "data.batch_size=2",
        *TINY_PRETRAIN,
        f"paths.output_dir={pretrain_dir}",
        cwd=tmp_path,
    )
    assert "position MAE" in result.stdout
    export = pretrain_dir / "export" / "test_efficientnet.pt"
    assert export.is_file() and (pretrain_dir / "metrics.csv").is_file()
    assert set(torch.load(export, weights_only=True)) >= {"conv_stem.weight"}

    fold_dir = tmp_path / "folds"
    run(
        "ctvoco-finetune",
        "-m",
        f"data.root={rsna}",
        f"data.cache_dir={cache}",
        shape,
        "data.fold=0,1",
        "data.num_workers=0",
        f"model.module.init=voco:{export}",
        *TINY_FINETUNE,
        f"hydra.sweep.dir={fold_dir}",
        cwd=tmp_path,
    )
    for job in ("0", "1"):
        for name in (
            "oof.csv",
            "metrics.json",
            "roc.png",
            "confusion.png",
            "calibration.png",
            "learning_curves.png",
        ):
            assert (fold_dir / job / name).is_file(), f"{job}/{name} missing"
    report = subprocess.run(
        [str(BIN / "ctvoco-cv-report"), str(fold_dir)], capture_output=True, text=True, check=True
    )
    assert "pooled" in report.stdout
    table = pd.read_csv(fold_dir / "cv_report.csv")
    assert list(table["run"].iloc[-3:]) == ["mean", "std", "pooled"]

    checkpoint = next((fold_dir / "0" / "checkpoints").glob("best-*.ckpt"))
    submission = tmp_path / "submission.csv"
    run(
        "ctvoco-predict",
        f"checkpoint={checkpoint}",
        f"checkpoint={fold_dir / '1' / 'checkpoints' / 'last.ckpt'}",
        f"input={rsna / 'test_images'}",
        f"output={submission}",
        "num_workers=0",
        f"paths.output_dir={tmp_path / 'predict_run'}",
        cwd=tmp_path,
    )
    frame = pd.read_csv(submission)
    test_labels = pd.read_csv(rsna / "test_labels.csv")
    assert sorted(frame["patient_id"]) == sorted(test_labels["patient_id"])
    assert list(frame.columns) == ["patient_id", *PREDICTION_COLUMNS]
    for target in TARGETS:
        assert frame[target_columns(target)].sum(axis=1).round(6).eq(1).all()
    assert 0 < rsna_score(test_labels, frame)["score"] < 5
