"""The non-finite loss policy: count, log, and stop after a limit; never skip silently.

Two kinds of step change no weights:

- a **non-finite loss**: the step is skipped and counted; more than ``max_nonfinite`` of
  them stop the run;
- under ``16-mixed``, a finite loss whose **gradients overflow**: the gradient scaler skips
  ``optimizer.step()`` and halves its scale. That is how dynamic loss scaling finds its
  scale (a few such steps at the start of a run are normal), so these steps are counted
  and logged apart, and only a long unbroken run of them (the scale has collapsed: the
  gradients are not finite at any scale) stops training.

:class:`NonFiniteMonitor` applies the policy as a Lightning callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import Tensor

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced more non-finite losses than allowed."""


MAX_CONSECUTIVE_SCALER_SKIPS = 32
"""Unbroken scaler-skipped steps that stop training (the scale has fallen by ``2**32``)."""


class NonFiniteGuard:
    """Counts non-finite losses and stops training after ``max_count`` of them.

    Args:
        max_count: How many non-finite losses are tolerated (their steps are skipped and
            logged); one more raises :class:`NonFiniteLossError`. 0 stops at the first.
        max_consecutive_scaler_skips: Unbroken gradient-scaler skips that stop training.
    """

    def __init__(
        self, max_count: int = 10, max_consecutive_scaler_skips: int = MAX_CONSECUTIVE_SCALER_SKIPS
    ) -> None:
        if max_count < 0:
            raise ValueError(f"max_nonfinite must be >= 0; got {max_count}")
        self.max_count = max_count
        self.max_consecutive_scaler_skips = max_consecutive_scaler_skips
        self.count = 0
        self.scaler_skips = 0
        self.consecutive_scaler_skips = 0

    def check(self, finite: bool, step: int, detail: str = "") -> bool:
        """Record one loss; ``True`` when it is finite (the step may go on).

        Raises:
            NonFiniteLossError: The limit is exceeded.
        """
        if finite:
            return True
        self.count += 1
        log.warning(
            "non-finite loss at step %d (%d of %d tolerated; the step is skipped)%s",
            step,
            self.count,
            self.max_count,
            f": {detail}" if detail else "",
        )
        if self.count > self.max_count:
            raise NonFiniteLossError(
                f"{self.count} non-finite losses (limit max_nonfinite={self.max_count}); last at "
                f"step {step}. Lower the learning rate, enable gradient clipping, use bf16 "
                "instead of fp16, or check the data"
            )
        return False

    def optimizer_step(self, taken: bool, step: int) -> None:
        """Record whether the optimiser really stepped after a finite loss.

        ``taken=False`` means the fp16 gradient scaler skipped the step (overflowing
        gradients).

        Raises:
            NonFiniteLossError: ``max_consecutive_scaler_skips`` skips in a row.
        """
        if taken:
            self.consecutive_scaler_skips = 0
            return
        self.scaler_skips += 1
        self.consecutive_scaler_skips += 1
        log.info(
            "step %d: the fp16 gradient scaler skipped the optimiser step (overflowing "
            "gradients; %d such steps so far, %d in a row)",
            step,
            self.scaler_skips,
            self.consecutive_scaler_skips,
        )
        if self.consecutive_scaler_skips >= self.max_consecutive_scaler_skips:
            raise NonFiniteLossError(
                f"the fp16 gradient scaler skipped {self.consecutive_scaler_skips} optimiser "
                f"steps in a row (last at step {step}): the gradients are not finite at any "
                "scale. Lower the learning rate, enable gradient clipping, use bf16 instead of "
                "fp16, or check the data"
            )

    def state_dict(self) -> dict[str, int]:
        """Saved in checkpoints so a resumed run keeps counting."""
        return {"count": self.count, "scaler_skips": self.scaler_skips}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the counts."""
        self.count = int(state.get("count", 0))
        self.scaler_skips = int(state.get("scaler_skips", 0))


class NonFiniteMonitor(Callback):
    """Applies a :class:`NonFiniteGuard` in training: skips, counts, logs, stops.

    The module asks :meth:`loss_is_finite` in ``training_step`` and returns ``None`` (no
    backward, no weight change) when it says no. The callback watches every optimiser step
    through a step post-hook: a step after a finite loss that the fp16 gradient scaler
    skipped is counted apart (:meth:`NonFiniteGuard.optimizer_step`). After each batch it
    logs ``train/scaler_skipped_steps``, and ``train/nonfinite_count`` (every batch, or only
    after a non-finite loss).

    Args:
        guard: The counts (the module saves them in its checkpoints).
        batch_key: A batch entry whose first dim is the batch size (for the logged values).
        log_count_every_step: Log ``train/nonfinite_count`` after every batch; ``False``:
            only after a batch whose loss was not finite.
    """

    def __init__(self, guard: NonFiniteGuard, batch_key: str, log_count_every_step: bool) -> None:
        self.guard = guard
        self.batch_key = batch_key
        self.log_count_every_step = log_count_every_step
        self._finite = True
        self._attempted = False
        self._stepped = False
        self._handle: Any = None

    def loss_is_finite(
        self, pl_module: LightningModule, loss: Tensor, detail: Callable[[], str] | None = None
    ) -> bool:
        """Whether the step may go on: ``loss`` is finite on every rank.

        Args:
            pl_module: The training module (its trainer reduces the decision over ranks).
            loss: The step's loss.
            detail: Describes the loss terms; called only for a non-finite loss.

        Raises:
            NonFiniteLossError: The guard's limit is exceeded.
        """
        finite = bool(torch.isfinite(loss).item())
        self._finite = pl_module.trainer.strategy.reduce_boolean_decision(finite, all=True)
        text = detail() if detail is not None and not self._finite else ""
        return self.guard.check(self._finite, pl_module.global_step, text)

    @property
    def step_taken(self) -> bool:
        """The current batch's loss was finite and the optimiser really stepped."""
        return self._finite and self._attempted and self._stepped

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._attempted = self._stepped = False

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None:
        self._attempted, self._stepped = True, False
        inner = getattr(optimizer, "optimizer", optimizer)  # LightningOptimizer wraps it
        self._remove_hook()
        self._handle = inner.register_step_post_hook(self._step_hook)

    def _step_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._stepped = True

    def _remove_hook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        # Counted here, after the optimiser step, so that a step the gradient scaler skipped
        # shows up in the same step's logged value.
        self._remove_hook()
        if self._attempted and self._finite:
            self.guard.optimizer_step(self._stepped, pl_module.global_step)
        size = batch[self.batch_key].shape[0]
        if self.log_count_every_step or not self._finite:
            pl_module.log("train/nonfinite_count", float(self.guard.count), batch_size=size)
        pl_module.log("train/scaler_skipped_steps", float(self.guard.scaler_skips), batch_size=size)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._remove_hook()
