"""Tests for ctvoco.training.guards.NonFiniteGuard (count, log, stop; never skip silently)."""

from __future__ import annotations

import logging

import pytest
import torch

from ctvoco.training.distributed import gather_with_grad
from ctvoco.training.guards import NonFiniteGuard, NonFiniteLossError


def test_finite_losses_pass_and_are_not_counted():
    guard = NonFiniteGuard(2)
    assert all(guard.check(True, step) for step in range(5))
    assert guard.count == 0


def test_nonfinite_losses_are_counted_then_raise(caplog):
    guard = NonFiniteGuard(2)
    with caplog.at_level(logging.WARNING, logger="ctvoco.training.guards"):
        assert guard.check(False, 3, "intra=nan") is False
        assert guard.check(True, 4) is True
        assert guard.check(False, 5) is False
    assert guard.count == 2
    assert len(caplog.records) == 2
    assert "step 3" in caplog.records[0].getMessage()
    assert "intra=nan" in caplog.records[0].getMessage()
    assert "2 of 2" in caplog.records[1].getMessage()
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite.*max_nonfinite=2.*step 9"):
        guard.check(False, 9)
    assert guard.count == 3


def test_zero_tolerance_stops_at_the_first():
    guard = NonFiniteGuard(0)
    with pytest.raises(NonFiniteLossError):
        guard.check(False, 0)


def test_negative_limit_is_rejected():
    with pytest.raises(ValueError, match="max_nonfinite"):
        NonFiniteGuard(-1)


def test_state_round_trip_keeps_counting():
    guard = NonFiniteGuard(3)
    guard.check(False, 0)
    guard.check(False, 1)
    assert guard.state_dict() == {"count": 2, "scaler_skips": 0}
    resumed = NonFiniteGuard(3)
    resumed.load_state_dict(guard.state_dict())
    assert resumed.count == 2
    resumed.check(False, 2)
    with pytest.raises(NonFiniteLossError):
        resumed.check(False, 3)
    resumed.load_state_dict({})
    assert resumed.count == 0


def test_error_is_a_runtime_error():
    assert issubclass(NonFiniteLossError, RuntimeError)


def test_gather_with_grad_is_identity_without_distributed():
    x = torch.randn(2, 3, requires_grad=True)
    assert gather_with_grad(x) is x


def test_scaler_skips_are_counted_apart_and_reset_by_a_taken_step() -> None:
    guard = NonFiniteGuard(max_count=0, max_consecutive_scaler_skips=3)
    for step in range(2):
        guard.optimizer_step(False, step)
    guard.optimizer_step(True, 2)
    guard.optimizer_step(False, 3)
    guard.optimizer_step(False, 4)
    assert (guard.count, guard.scaler_skips, guard.consecutive_scaler_skips) == (0, 4, 2)
    with pytest.raises(NonFiniteLossError, match="3 optimiser steps in a row"):
        guard.optimizer_step(False, 5)


def test_scaler_skips_survive_a_checkpoint() -> None:
    guard = NonFiniteGuard()
    guard.optimizer_step(False, 0)
    guard.check(False, 1)
    restored = NonFiniteGuard()
    restored.load_state_dict(guard.state_dict())
    assert (restored.count, restored.scaler_skips) == (1, 1)
