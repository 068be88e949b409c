"""Learning-rate schedules, per optimiser step.

Every factor here is a pure function of the optimiser step: a ``LambdaLR`` rebuilt from a
checkpoint (which stores the step) gives exactly the learning rates of the run it resumes.
"""

from __future__ import annotations

import math

from ctvoco.errors import ArgumentError, is_whole_number


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


def check_schedule_steps(where: str, schedule_steps: object, warmup_steps: int) -> None:
    """Refuse a cosine horizon that is not a whole number of steps beyond the warm-up.

    Args:
        where: The section of the setting (``scheduler``), named in the error.
        schedule_steps: ``None`` (the run length) or the step at which the cosine ends.
        warmup_steps: The warm-up length the horizon must exceed.

    Raises:
        ArgumentError: Naming the setting, its value and what it must be.
    """
    if schedule_steps is None:
        return
    if not is_whole_number(schedule_steps) or schedule_steps <= warmup_steps:
        raise ArgumentError(
            f"{where}.schedule_steps",
            f"={schedule_steps!r} must be null (the run length) or a whole number of steps "
            f"greater than warmup_steps={warmup_steps}",
        )


class WarmupCosine:
    """:func:`warmup_cosine` as a ``LambdaLR`` factor whose run length is set at train start.

    The number of optimiser steps of a run is only known once its training data is loaded.
    Asking Lightning for it while the optimiser is built (``estimated_stepping_batches`` in
    ``configure_optimizers``) loads the training data before a checkpoint is restored, so a
    run resumed mid-epoch would restart its epoch from the beginning. The modules build this
    factor without a length and set :attr:`total_steps` in ``on_train_start``, after the
    restore. The factor of the warm-up steps (and of step 0) does not depend on the length.

    ``schedule_steps`` fixes the cosine's horizon apart from the run: a run of 30,000 steps
    on a 250,000-step schedule (the research code's pretraining) stops at about 0.975 of the
    peak learning rate instead of annealing to ``min_ratio``.

    Args:
        warmup_steps: Length of the linear warm-up.
        min_lr_ratio: Final factor.
        total_steps: The run length (``None``: not known yet).
        schedule_steps: Step at which the cosine reaches ``min_ratio``; ``None``: the run
            length ``total_steps``.
    """

    def __init__(
        self,
        warmup_steps: int,
        min_lr_ratio: float = 0.0,
        total_steps: int | None = None,
        schedule_steps: int | None = None,
    ):
        self.warmup_steps = int(warmup_steps)
        self.min_ratio = float(min_lr_ratio)
        self.total_steps = total_steps
        self.schedule_steps = None if schedule_steps is None else int(schedule_steps)

    @property
    def horizon(self) -> int | None:
        """The step at which the cosine ends (``None`` while the run length is unknown)."""
        return self.schedule_steps if self.schedule_steps is not None else self.total_steps

    def __call__(self, step: int) -> float:
        horizon = self.horizon
        if horizon is None:
            if step <= self.warmup_steps:
                return warmup_cosine(step, self.warmup_steps, self.warmup_steps, self.min_ratio)
            raise RuntimeError("WarmupCosine.total_steps was not set before the cosine started")
        return warmup_cosine(step, self.warmup_steps, horizon, self.min_ratio)


class CyclicCosine:
    """A cosine that falls to ``min_ratio`` and climbs back, over and over (per step).

    After an optional linear warm-up, the factor at ``t`` steps past the warm-up is
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t / half_period)) / 2``: the peak at
    ``t = 0``, ``min_ratio`` at ``half_period``, the peak again at ``2 * half_period``, and
    so on. It is torch's ``CosineAnnealingLR(T_max=half_period, eta_min=min_ratio * lr)``
    stepped past ``T_max``, which the research code's classifier runs per optimiser step
    with ``T_max=5000`` (a climb back, not a warm restart). The run length plays no part;
    :attr:`total_steps` is accepted and ignored, like the attribute of :class:`WarmupCosine`.

    Args:
        half_period: Steps from the peak to the minimum, ``T_max``.
        min_lr_ratio: The minimum factor.
        warmup_steps: Length of a linear warm-up before the first cycle.

    Raises:
        ArgumentError: If ``half_period`` is not a whole number > 0.
    """

    def __init__(self, half_period: int, min_lr_ratio: float = 0.0, warmup_steps: int = 0):
        if not is_whole_number(half_period) or half_period < 1:
            raise ArgumentError(
                "half_period",
                f"={half_period!r} (the cyclic cosine's steps from the peak to the minimum) "
                "must be a whole number of steps > 0",
            )
        self.half_period = int(half_period)
        self.min_ratio = float(min_lr_ratio)
        self.warmup_steps = int(warmup_steps)
        self.total_steps: int | None = None

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        phase = math.pi * (step - self.warmup_steps) / self.half_period
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(phase))


def stepping_batches(trainer: object) -> int:
    """The optimiser steps of ``trainer``'s run (1 when unknown or unbounded)."""
    try:
        total = trainer.estimated_stepping_batches  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return 1
    return max(1, int(total)) if total != float("inf") else 1
