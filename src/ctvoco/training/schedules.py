"""Learning-rate schedules, per optimiser step."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR factor: linear warm-up from 0 over ``warmup_steps``, then cosine to ``min_ratio``.

    Args:
        step: Optimiser steps taken so far.
        warmup_steps: Length of the linear warm-up.
        total_steps: Step at which the cosine reaches ``min_ratio``.
        min_ratio: Final factor.

    Returns:
        The multiplier of the base learning rate (1 at the end of warm-up).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """:func:`warmup_cosine` as a ``LambdaLR`` factor whose run length is set at train start.

    The number of optimiser steps of a run is only known once its training data is loaded.
    Asking Lightning for it while the optimiser is built (``estimated_stepping_batches`` in
    ``configure_optimizers``) loads the training data before a checkpoint is restored, so a
    run resumed mid-epoch would restart its epoch from the beginning. The modules build this
    factor without a length and set :attr:`total_steps` in ``on_train_start``, after the
    restore. The factor of the warm-up steps (and of step 0) does not depend on the length.

    Args:
        warmup_steps: Length of the linear warm-up.
        min_ratio: Final factor.
        total_steps: Step at which the cosine reaches ``min_ratio`` (``None``: not known yet).
    """

    def __init__(self, warmup_steps: int, min_ratio: float = 0.0, total_steps: int | None = None):
        self.warmup_steps = int(warmup_steps)
        self.min_ratio = float(min_ratio)
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if self.total_steps is None:
            if step <= self.warmup_steps:
                return warmup_cosine(step, self.warmup_steps, self.warmup_steps, self.min_ratio)
            raise RuntimeError("WarmupCosine.total_steps was not set before the cosine started")
        return warmup_cosine(step, self.warmup_steps, self.total_steps, self.min_ratio)


def stepping_batches(trainer: object) -> int:
    """The optimiser steps of ``trainer``'s run (1 when unknown or unbounded)."""
    try:
        total = trainer.estimated_stepping_batches  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return 1
    return max(1, int(total)) if total != float("inf") else 1
