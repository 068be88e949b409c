"""Training throughput, logged per batch as ``train/volumes_per_s``."""

from __future__ import annotations

import time
from typing import Any

from pytorch_lightning import Callback, LightningModule, Trainer


class ThroughputMonitor(Callback):
    """Logs ``train/volumes_per_s``: the batch's volumes over its wall time.

    The time runs from the start of the batch to its end, the optimiser step included.

    Args:
        batch_key: A batch entry whose first dim is the number of volumes.
    """

    def __init__(self, batch_key: str) -> None:
        self.batch_key = batch_key
        self._started = 0.0

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        elapsed = time.perf_counter() - self._started
        size = batch[self.batch_key].shape[0]
        if elapsed > 0:
            pl_module.log("train/volumes_per_s", size / elapsed, batch_size=size)
