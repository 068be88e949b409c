"""Exceptions that separate a user's mistake from a bug.

A :class:`UserError` is something the user can fix: a missing data directory, an unknown
backbone name, a malformed ``train.csv``. The command-line tools print it as one sentence
and exit with status 2, without a traceback. Every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import math


class UserError(Exception):
    """A mistake the user can fix; the message says what to change."""


class DataError(UserError, ValueError):
    """Bad input data; the message names the file, row or key."""


def check_optimizer_settings(
    where: str, *, lr: float, weight_decay: float, warmup_steps: int, min_lr_ratio: float
) -> None:
    """Refuse optimiser settings that torch or the schedule would reject only at training start.

    Args:
        where: The config section the settings come from (``model.module``), named in the error.
        lr: Peak learning rate; a number greater than 0.
        weight_decay: AdamW's weight decay; a number, at least 0.
        warmup_steps: Linear warm-up length in optimiser steps; a whole number, at least 0.
        min_lr_ratio: Final learning rate as a fraction of ``lr``; from 0 to 1.

    Raises:
        UserError: Naming the key, its value and what it must be.
    """
    rules = (
        ("lr", lr, _is_number(lr) and lr > 0, "a number greater than 0"),
        (
            "weight_decay",
            weight_decay,
            _is_number(weight_decay) and weight_decay >= 0,
            "a number >= 0",
        ),
        (
            "warmup_steps",
            warmup_steps,
            _is_whole(warmup_steps) and warmup_steps >= 0,
            "a whole number >= 0",
        ),
        (
            "min_lr_ratio",
            min_lr_ratio,
            _is_number(min_lr_ratio) and 0 <= min_lr_ratio <= 1,
            "a number from 0 to 1",
        ),
    )
    for name, value, valid, allowed in rules:
        if not valid:
            raise UserError(f"{where}.{name}={value} must be {allowed}")


def _is_number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: object) -> bool:
    """An int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)
