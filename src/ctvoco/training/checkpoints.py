"""Lightning's ``ModelCheckpoint`` with a ``last.ckpt`` that is always the latest state.

Lightning (2.6) refreshes ``last.ckpt`` only at save points where a top-k checkpoint was
written too: with a monitored metric, ``last.ckpt`` stays at the best epoch once the metric
stops improving, so "resume from last" or "predict with the final weights" silently use
an old state. :class:`ModelCheckpoint` writes ``last.ckpt`` at every save point (each
epoch's end, or each validation when validation runs inside epochs, and every
``every_n_train_steps`` steps), whether or not the monitored metric improved.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
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
