"""The non-finite loss policy: count, log, and stop after a limit; never skip silently.

Two kinds of step change no weights:

- a **non-finite loss**: the step is skipped and counted; more than ``max_nonfinite`` of
  them stop the run;
- under ``16-mixed``, a finite loss whose **gradients overflow**: the gradient scaler skips
  ``optimizer.step()`` and halves its scale. That is how dynamic loss scaling finds its
  scale (a few such steps at the start of a run are normal), so these steps are counted
  and logged apart, and only a long unbroken run of them (the scale has collapsed: the
  gradients are not finite at any scale) stops training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


class OptimizerStepCounter:
    """Counts ``optimizer.step()`` calls that really ran, through a step post-hook.

    The fp16 gradient scaler skips ``optimizer.step()`` when gradients overflow; the hook
    then never fires.
    """

    def __init__(self, optimizer: Any) -> None:
        self.count = 0
        inner = getattr(optimizer, "optimizer", optimizer)  # LightningOptimizer wraps it
        self._handle = inner.register_step_post_hook(self._hook)

    def _hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.count += 1

    def remove(self) -> None:
        """Detach the hook."""
        self._handle.remove()


@contextmanager
def count_optimizer_steps(optimizer: Any) -> Iterator[OptimizerStepCounter]:
    """``with count_optimizer_steps(opt) as stepped: ...``; then ``stepped.count``."""
    counter = OptimizerStepCounter(optimizer)
    try:
        yield counter
    finally:
        counter.remove()
