"""Tests for ctvoco.training.history.MetricsHistory (metrics.csv and learning curves)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ctvoco.io.atomic import TMP_MARK
from ctvoco.training.history import MetricsHistory, plot_learning_curves


class TinyRegression(pl.LightningModule):
    """A linear model that logs train/ and val/ metrics, one of them never finite."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        self.log("train/broken", float("nan"), on_epoch=True, on_step=False)
        self.log("plain_metric", 1.0)  # no "/": not part of the history
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)


def quiet_trainer(history: MetricsHistory, epochs: int = 3, **options) -> pl.Trainer:
    """A CPU trainer with ``history`` as its callback; ``options`` override the settings."""
    settings = {
        "accelerator": "cpu",
        "max_epochs": epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [history],
        **options,
    }
    return pl.Trainer(**settings)


def fit(
    history: MetricsHistory, epochs: int = 3, model: pl.LightningModule | None = None, **options
) -> pl.Trainer:
    trainer = quiet_trainer(history, epochs, **options)
    trainer.fit(model or TinyRegression(), data(), data())
    return trainer


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[MetricsHistory, pl.Trainer]:
    history = MetricsHistory(tmp_path_factory.mktemp("run") / "out", plot_groups=("loss",))
    return history, fit(history)


def test_metrics_csv_has_one_row_per_epoch(finished):
    history, _ = finished
    frame = pd.read_csv(history.csv_path)
    assert list(frame["epoch"]) == [0, 1, 2]  # no row for the sanity check
    assert list(frame["step"]) == [2, 4, 6]
    assert {"train/loss", "val/loss"} <= set(frame.columns)
    assert "plain_metric" not in frame.columns
    assert "train/broken" not in frame.columns  # non-finite values are left out
    assert frame["train/loss"].notna().all() and frame["val/loss"].notna().all()
    pd.testing.assert_frame_equal(frame, history.frame(), check_dtype=False)


def test_learning_curves_png_at_fit_end(finished):
    history, _ = finished
    assert history.plot_path == history.directory / "learning_curves.png"
    assert history.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    leftovers = [p.name for p in history.directory.iterdir() if TMP_MARK in p.name]
    assert not leftovers, leftovers


def test_validation_after_fit_adds_no_row(tmp_path: Path):
    history = MetricsHistory(tmp_path / "run")
    trainer = fit(history, epochs=3)
    assert trainer.current_epoch == 3  # what a row for the validation run would be keyed by
    rows_after_fit = {e: dict(r) for e, r in history.rows.items()}
    trainer.validate(trainer.lightning_module, data())
    assert history.rows == rows_after_fit
    frame = pd.read_csv(history.csv_path)
    assert list(frame["epoch"]) == [0, 1, 2]
    assert frame["val/loss"].notna().all()


def test_rows_survive_state_dict_round_trip(finished, tmp_path: Path):
    history, _ = finished
    restored = MetricsHistory(tmp_path)
    restored.load_state_dict(history.state_dict())
    assert restored.rows == history.rows
    restored.write()
    pd.testing.assert_frame_equal(pd.read_csv(restored.csv_path), pd.read_csv(history.csv_path))


def test_rows_survive_a_checkpoint(tmp_path: Path):
    history = MetricsHistory(tmp_path / "first")
    trainer = fit(history, epochs=2)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if "MetricsHistory" in k]
    resumed = MetricsHistory(tmp_path / "second")
    resumed.load_state_dict(state)
    assert sorted(resumed.rows) == [0, 1]
    assert resumed.rows[1]["train/loss"] == pytest.approx(history.rows[1]["train/loss"])


def test_resumed_fit_keeps_earlier_epochs(tmp_path: Path):
    first = MetricsHistory(tmp_path / "run")
    trainer = fit(first, epochs=1)
    path = tmp_path / "epoch0.ckpt"
    trainer.save_checkpoint(path)
    second = MetricsHistory(tmp_path / "run")
    trainer = quiet_trainer(second, epochs=2)
    trainer.fit(TinyRegression(), data(), data(), ckpt_path=path)
    assert list(pd.read_csv(second.csv_path)["epoch"]) == [0, 1]


def test_nothing_written_without_rows(tmp_path: Path):
    history = MetricsHistory(tmp_path / "empty")
    history.write()
    assert not history.csv_path.exists()


def test_plot_falls_back_to_all_metrics(tmp_path: Path):
    frame = pd.DataFrame({"epoch": [0, 1], "val/auc": [0.5, 0.6], "step": [1, 2]})
    out = plot_learning_curves(frame, ("loss",), tmp_path / "plots" / "curves.png")
    assert out.is_file()


class StepLogger(pl.LightningModule):
    """Logs per step only: a loss equal to the batch index and a growing counter."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        self.log("train/loss", float(batch_idx))
        self.log("train/nonfinite_count", float(self.global_step))
        return self.layer(batch[0]).sum() * 0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_train_metrics_are_epoch_means_and_counters_their_last_value(tmp_path: Path):
    history = MetricsHistory(tmp_path)
    x = torch.randn(8, 3)
    loader = DataLoader(TensorDataset(x, x), batch_size=2)  # batch indices 0, 1, 2, 3
    quiet_trainer(history, epochs=2).fit(StepLogger(), loader)
    frame = pd.read_csv(history.csv_path)
    assert frame["train/loss"].tolist() == [1.5, 1.5]  # mean of 0..3, not the last batch's 3
    assert frame["train/nonfinite_count"].tolist() == [3.0, 7.0]


class EpochEndScore(TinyRegression):
    """Logs a validation metric from ``on_validation_epoch_end``, as the classifier does."""

    def on_validation_epoch_end(self) -> None:
        self.log("val/score", float(self.current_epoch) + 0.5)


def test_metrics_logged_at_validation_epoch_end_are_recorded(tmp_path: Path):
    history = MetricsHistory(tmp_path / "run")
    fit(history, epochs=2, model=EpochEndScore())
    frame = pd.read_csv(history.csv_path)
    assert list(frame["val/score"]) == [0.5, 1.5]


def test_validating_an_earlier_checkpoint_keeps_the_whole_history(tmp_path: Path):
    """``trainer.validate(ckpt_path=best)`` restores the callback as of that checkpoint."""
    history = MetricsHistory(tmp_path / "run")
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1)
    trainer = fit(history, epochs=3, callbacks=[history, saver], enable_checkpointing=True)
    first = sorted((tmp_path / "ckpt").glob("epoch=0-*.ckpt"))[0]
    trainer.validate(trainer.lightning_module, data(), ckpt_path=first, weights_only=True)
    assert list(pd.read_csv(history.csv_path)["epoch"]) == [0, 1, 2]


def test_validation_columns_are_empty_on_epochs_without_validation(tmp_path: Path):
    """Validating every second epoch: no value is carried over to the epochs in between."""
    history = MetricsHistory(tmp_path / "run")
    fit(history, epochs=4, model=EpochEndScore(), check_val_every_n_epoch=2)
    frame = pd.read_csv(history.csv_path)
    assert list(frame["epoch"]) == [0, 1, 2, 3]
    assert frame["train/loss"].notna().all()
    assert frame["val/loss"].isna().tolist() == [True, False, True, False]
    assert frame["val/score"].isna().tolist() == [True, False, True, False]
    assert frame["val/score"].dropna().tolist() == [1.5, 3.5]


def test_a_csv_logger_run_has_exactly_one_metrics_csv(tmp_path: Path):
    """``logger=csv`` keeps its per-step log under ``csv/`` beside the run's metrics.csv."""
    from hydra import compose, initialize_config_module

    from ctvoco.cli.components import build_loggers

    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose("pretrain", overrides=[f"paths.output_dir={tmp_path}", "logger=csv"])
    [logger] = build_loggers(cfg)
    history = MetricsHistory(tmp_path)
    fit(history, epochs=2, model=StepAndEpochLogger(), logger=logger, log_every_n_steps=1)
    assert sorted(tmp_path.rglob("metrics.csv")) == [history.csv_path]
    steps = pd.read_csv(tmp_path / "csv" / "steps.csv")
    assert steps["train/step_loss"].notna().sum() == 4  # one row per training step
    assert list(pd.read_csv(history.csv_path)["epoch"]) == [0, 1]


class StepAndEpochLogger(TinyRegression):
    """Also logs a per-step loss, as the shipped modules do."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train/step_loss", loss)
        return loss
