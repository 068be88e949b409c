"""Tests of :func:`ctvoco.reports.evaluation.log_evaluation` (the evaluation sent to wandb)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ctvoco.reports.evaluation import log_evaluation

METRICS = {"bowel": 0.2, "score": 0.4, "auc_bowel": float("nan")}


class FakeRun:
    def __init__(self, disabled: bool = False) -> None:
        self.id = "abc123"
        self.disabled = disabled
        self.artifacts: list[Any] = []

    def log_artifact(self, artifact: Any) -> None:
        self.artifacts.append(artifact)


class WandbLogger:
    """Records what is logged; named like Lightning's logger, which is how it is found."""

    def __init__(self, disabled: bool = False) -> None:
        self.experiment = FakeRun(disabled)
        self.images: list[dict[str, Any]] = []
        self.tables: list[dict[str, Any]] = []

    def log_image(self, key: str, images: list[str], **kwargs: Any) -> None:
        self.images.append({"key": key, "images": images, **kwargs})

    def log_table(self, key: str, columns: list[str], data: list[list[Any]]) -> None:
        self.tables.append({"key": key, "columns": columns, "data": data})


class CSVLogger:
    def log_table(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("only wandb loggers are used")


class FakeArtifact:
    def __init__(self, name: str, type: str) -> None:
        self.name, self.type = name, type
        self.files: list[tuple[str, str]] = []

    def add_file(self, path: str, name: str) -> None:
        self.files.append((path, name))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "oof.csv").write_text("patient_id,series_id\n1,2\n")
    for name in ("roc", "confusion"):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{name}.png")
    return tmp_path


@pytest.fixture
def fake_artifact(monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.setattr(wandb, "Artifact", FakeArtifact)


def test_plots_metric_table_and_oof_go_to_wandb(run_dir: Path, fake_artifact: None) -> None:
    logger = WandbLogger()
    log_evaluation([CSVLogger(), logger], run_dir, METRICS)
    (images,) = logger.images
    assert images["key"] == "evaluation"
    assert [Path(p).name for p in images["images"]] == ["confusion.png", "roc.png"]
    assert images["caption"] == ["confusion", "roc"]
    (table,) = logger.tables
    assert table["key"] == "evaluation/metrics"
    assert table["columns"] == ["metric", "value"]
    assert [row[0] for row in table["data"]] == list(METRICS)
    assert table["data"][1] == ["score", 0.4]
    (artifact,) = logger.experiment.artifacts
    assert (artifact.name, artifact.type) == ("oof-abc123", "predictions")
    assert artifact.files == [(str(run_dir / "oof.csv"), "oof.csv")]


def test_a_disabled_run_logs_nothing(run_dir: Path, fake_artifact: None) -> None:
    logger = WandbLogger(disabled=True)
    log_evaluation([logger], run_dir, METRICS)
    assert logger.images == [] and logger.tables == [] and logger.experiment.artifacts == []


def test_the_real_logger_in_disabled_mode_writes_no_wandb_files(
    run_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger

    monkeypatch.setenv("WANDB_MODE", "disabled")
    save_dir = tmp_path_factory.mktemp("wandb_save")
    logger = LightningWandbLogger(project="ctvoco-test", save_dir=str(save_dir))
    log_evaluation([logger], run_dir, METRICS)
    assert list(save_dir.iterdir()) == []
    assert sorted(p.name for p in run_dir.iterdir()) == ["confusion.png", "oof.csv", "roc.png"]
