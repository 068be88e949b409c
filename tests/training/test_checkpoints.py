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


def test_periodic_and_step_checkpoints_at_the_same_interval_coexist(tmp_path: Path):
    """The documented ``callbacks.periodic_checkpoint.every_n_train_steps=N`` may equal the
    step checkpoint's interval: each checkpoint callback keeps its own state."""
    from hydra import compose, initialize_config_module

    from ctvoco.cli.components import build_callbacks

    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(
            config_name="finetune",
            overrides=[
                f"paths.output_dir={tmp_path}",
                "callbacks.periodic_checkpoint.every_n_train_steps=2",
                "callbacks.step_checkpoint.every_n_train_steps=2",
                "callbacks.model_checkpoint.monitor=val/score",
            ],
        )
    callbacks = [c for c in build_callbacks(cfg) if isinstance(c, pl.callbacks.ModelCheckpoint)]
    assert len({c.state_key for c in callbacks}) == len(callbacks) == 3
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=4,
        callbacks=callbacks,
    )
    trainer.fit(WorseningModel(), loader(4), loader(1))
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "periodic").iterdir()) == [
        "step0000002.ckpt",
        "step0000004.ckpt",
    ]
    assert saved_step(tmp_path / "checkpoints" / "latest-step.ckpt") == 4


class DiskFull(OSError):
    pass


def test_a_failed_checkpoint_write_leaves_no_file_under_its_name(tmp_path: Path, monkeypatch):
    """A full disk in the middle of a save keeps the previous checkpoint and no partial one."""
    from ctvoco.training.checkpoints import AtomicCheckpointIO

    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=1,
        enable_checkpointing=False,
        default_root_dir=tmp_path / "run",
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(WorseningModel(), loader(1))
    target = tmp_path / "best.ckpt"
    trainer.save_checkpoint(target)
    before = target.read_bytes()

    real_save = torch.save

    def fill_the_disk(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(100)
        raise DiskFull(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fill_the_disk)
    try:
        trainer.save_checkpoint(target)
    except DiskFull:
        pass
    else:
        raise AssertionError("the write error was swallowed")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["best.ckpt"]


def test_shipped_trainers_write_checkpoints_atomically(tmp_path: Path):
    from hydra import compose, initialize_config_module

    from ctvoco.cli.components import build_trainer
    from ctvoco.training.checkpoints import AtomicCheckpointIO

    for trainer_config in ("cpu", "ddp_sim"):
        with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
            cfg = compose(
                config_name="finetune",
                overrides=[
                    f"paths.output_dir={tmp_path}",
                    f"trainer={trainer_config}",
                    "logger=none",
                ],
            )
        trainer = build_trainer(cfg)
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO), trainer_config
