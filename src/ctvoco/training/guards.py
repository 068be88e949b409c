"""The non-finite loss policy: count, log, and stop after a limit; never skip silently."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced more non-finite losses than allowed."""


class NonFiniteGuard:
    """Counts non-finite losses and stops training after ``max_count`` of them.

    Args:
        max_count: How many non-finite losses are tolerated (their steps are skipped and
            logged); one more raises :class:`NonFiniteLossError`. 0 stops at the first.
    """

    def __init__(self, max_count: int = 10) -> None:
        if max_count < 0:
            raise ValueError(f"max_nonfinite must be >= 0; got {max_count}")
        self.max_count = max_count
        self.count = 0

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

    def state_dict(self) -> dict[str, int]:
        """Saved in checkpoints so a resumed run keeps counting."""
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the count."""
        self.count = int(state.get("count", 0))
