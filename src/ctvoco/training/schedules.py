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
