"""The shipped ``callbacks/early_stopping`` option: added to the defaults, it ends a run whose
monitored validation metric stops improving, also with step-interval validation."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from pytorch_lightning.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from ctvoco.cli.components import build_callbacks
from ctvoco.training.checkpoints import ModelCheckpoint
from tests.training.test_checkpoints import WorseningModel


def finetune_config(tmp_path, *overrides: str):
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(
            config_name="finetune", overrides=[f"paths.output_dir={tmp_path}", *overrides]
        )


class PlateauModel(WorseningModel):
    """``val/task_score`` improves for the first ``improving`` validations, then stays put."""

    def __init__(self, improving: int) -> None:
        super().__init__()
        self.improving = improving

    def on_validation_epoch_end(self) -> None:
        self.log("val/task_score", 1.0 - 0.1 * min(self.validations, self.improving - 1))
        self.validations += 1


def test_off_unless_added(tmp_path) -> None:
    callbacks = build_callbacks(finetune_config(tmp_path))
    assert not any(isinstance(c, EarlyStopping) for c in callbacks)


def test_added_beside_the_default_callbacks(tmp_path) -> None:
    cfg = finetune_config(
        tmp_path, "callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=2"
    )
    callbacks = build_callbacks(cfg)
    (stopper,) = [c for c in callbacks if isinstance(c, EarlyStopping)]
    assert (stopper.monitor, stopper.patience, stopper.mode) == ("val/task_score", 2, "min")
    checkpoint = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    assert checkpoint.monitor == "val/task_score"  # the finetune default still applies


def test_step_interval_validation_stops_after_patience(tmp_path) -> None:
    cfg = finetune_config(
        tmp_path,
        "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=2",
        "callbacks.early_stopping.verbose=false",
    )
    stopper = next(c for c in build_callbacks(cfg) if isinstance(c, EarlyStopping))
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        max_steps=100,
        val_check_interval=5,
        check_val_every_n_epoch=None,
        callbacks=[stopper],
    )
    model = PlateauModel(improving=3)
    data = DataLoader(TensorDataset(torch.randn(1000, 2)), batch_size=1)
    trainer.fit(model, data, DataLoader(TensorDataset(torch.randn(1, 2)), batch_size=1))
    # best at the 3rd validation (step 15), two more without improvement, stop at step 25
    assert model.validations == 5
    assert trainer.global_step == 25
