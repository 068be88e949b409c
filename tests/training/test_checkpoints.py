"""Tests for ctvoco.training.checkpoints.ModelCheckpoint (``last.ckpt`` never lags)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ctvoco.training.checkpoints import ModelCheckpoint


class WorseningModel(pl.LightningModule):
    """Its monitored validation metric is best at the first validation and worse after."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.validations = 0

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/score", float(self.validations))
        self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(count: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(count, 2)), batch_size=1)


def fit(tmp_path: Path, **trainer_options) -> tuple[pl.Trainer, Path]:
    folder = tmp_path / "checkpoints"
    callback = ModelCheckpoint(
        dirpath=folder,
        filename="best-{step}",
        monitor="val/score",
        mode="min",
        save_last=True,
        save_top_k=1,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[callback],
        **trainer_options,
    )
    trainer.fit(WorseningModel(), loader(4), loader(1))
    return trainer, folder


def saved_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def test_last_follows_every_epoch_while_best_stays(tmp_path: Path):
    trainer, folder = fit(tmp_path, max_epochs=3)
    assert trainer.global_step == 12
    assert [p.name for p in folder.glob("best-*.ckpt")] == ["best-step=4.ckpt"]
    assert saved_step(folder / "last.ckpt") == 12


def test_last_follows_validations_inside_epochs(tmp_path: Path):
    """Step-based validation (``val_check_interval``), as long finetuning runs use."""
    trainer, folder = fit(
        tmp_path, max_steps=9, max_epochs=-1, val_check_interval=3, check_val_every_n_epoch=None
    )
    assert trainer.global_step == 9
    assert [p.name for p in folder.glob("best-*.ckpt")] == ["best-step=3.ckpt"]
    assert saved_step(folder / "last.ckpt") == 9
    assert sorted(p.name for p in folder.iterdir()) == ["best-step=3.ckpt", "last.ckpt"]


def test_last_is_written_with_the_best_when_the_metric_improves(tmp_path: Path):
    _, folder = fit(tmp_path, max_epochs=1)
    assert saved_step(folder / "last.ckpt") == saved_step(folder / "best-step=4.ckpt") == 4
