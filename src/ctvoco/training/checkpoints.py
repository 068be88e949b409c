"""Checkpoint writing: never a truncated file, a ``last.ckpt`` that is always the latest state.

:class:`AtomicCheckpointIO` (the shipped trainers' checkpoint plugin) writes every
checkpoint through :func:`ctvoco.io.atomic.atomic_write`: a full disk or a kill during a save
leaves the previous file, never a truncated one under the final name.

Lightning keeps one state per checkpoint callback, keyed by its monitor and intervals; two
Lightning ``ModelCheckpoint`` with the same interval (the step and the periodic checkpoints
at the documented ``every_n_train_steps``) collide. :class:`StepCheckpoint` and
:class:`ModelCheckpoint` add their directory and file name to that key.

Lightning (2.6) refreshes ``last.ckpt`` only at save points where a top-k checkpoint was
written too: with a monitored metric, ``last.ckpt`` stays at the best epoch once the metric
stops improving, so "resume from last" or "predict with the final weights" silently use
an old state. :class:`ModelCheckpoint` writes ``last.ckpt`` at every save point (each
epoch's end, or each validation when validation runs inside epochs, and every
``every_n_train_steps`` steps), whether or not the monitored metric improved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.callbacks import ModelCheckpoint as LightningModelCheckpoint

from ctvoco.io.atomic import torch_save_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` whose local saves are atomic (temporary file,
    fsync, rename); remote (fsspec) paths are written as Lightning writes them."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        fs = get_filesystem(path)
        if "file" not in fs.protocol or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch_save_atomic(checkpoint, target)


class StepCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with a state of its own per directory and file name."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=self._train_time_interval,
            dirpath=str(self.dirpath),
            filename=self.filename,
        )


class ModelCheckpoint(StepCheckpoint):
    """``pytorch_lightning.callbacks.ModelCheckpoint`` whose ``last.ckpt`` never lags.

    Same arguments and files as Lightning's; with ``save_last=True``, ``last.ckpt`` is
    rewritten at every point where Lightning considers saving, not only when a better
    checkpoint was kept.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` unless this step was saved already (or saving is off now)."""
        # _should_skip_saving_checkpoint is also true when this global step was saved (with
        # last.ckpt) by the hook that just ran, or by another save point of the same step.
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
