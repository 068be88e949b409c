"""What an exact resume needs beyond Lightning's checkpoint: the global torch RNG state.

Lightning restores weights, optimiser, schedulers, precision scaler and loop progress; the
data modules continue the interrupted epoch where it stopped (``SeededSampler.resume``).
Dropout draws from torch's global generator, whose state Lightning does not keep: this
callback stores it in every checkpoint and puts it back before the first resumed step. At
train start it also checks that the training loader was built after the restore, so that it
continues the interrupted epoch (a loader built earlier would replay the epoch from its start).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


class RNGState(pl.Callback):
    """Save torch's CPU (and CUDA) RNG state in checkpoints; restore it on resume."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied at the first training batch, after Lightning has set everything else up.
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        built = getattr(trainer.datamodule, "train_resume_point", None)
        if built is None or not trainer.fit_loop.restarted_mid_epoch:
            return
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        if done and tuple(built) == (0, 0):
            raise RuntimeError(
                f"the training data loader was built before the checkpoint was restored (e.g. "
                f"by trainer.estimated_stepping_batches in configure_optimizers): it would "
                f"replay epoch {trainer.current_epoch} from its start instead of continuing "
                f"after batch {done}, so the resumed run would not see the data of the "
                "interrupted one"
            )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is None:
            return
        torch.set_rng_state(self._pending["torch"])
        if "cuda" in self._pending and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._pending["cuda"])
        self._pending = None
