"""What an exact resume needs beyond Lightning's checkpoint: the global torch RNG state.

Lightning restores weights, optimiser, schedulers, precision scaler and loop progress; the
data modules continue the interrupted epoch where it stopped (``SeededSampler.resume``).
Dropout draws from torch's global generator, whose state Lightning does not keep: this
callback stores it in every checkpoint and puts it back before the first resumed step.
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

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is None:
            return
        torch.set_rng_state(self._pending["torch"])
        if "cuda" in self._pending and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._pending["cuda"])
        self._pending = None
