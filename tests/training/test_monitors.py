"""Throughput and non-finite monitoring are callbacks the modules attach, not copied hooks."""

from __future__ import annotations

import pytest

from ctvoco.classify import InjuryClassifier
from ctvoco.training.guards import NonFiniteMonitor
from ctvoco.training.throughput import ThroughputMonitor
from ctvoco.voco import VoCoPretrainer

HOOKS = ("on_train_batch_start", "on_train_batch_end", "optimizer_step")


def tiny(kind: str):
    if kind == "voco":
        return VoCoPretrainer(backbone="test_efficientnet", head_hidden=16, head_out=8)
    return InjuryClassifier(backbone="test_efficientnet", hidden=8)


@pytest.mark.parametrize("kind", ["voco", "classifier"])
def test_modules_attach_the_monitors_as_callbacks(kind: str) -> None:
    module = tiny(kind)
    callbacks = module.configure_callbacks()
    kinds = {type(c) for c in callbacks}
    assert {ThroughputMonitor, NonFiniteMonitor} <= kinds
    [monitor] = [c for c in callbacks if isinstance(c, NonFiniteMonitor)]
    assert monitor.guard is module.guard, "the checkpointed counts are the monitor's"


def test_the_classifier_has_no_batch_timing_or_step_counting_hooks() -> None:
    own = set(vars(InjuryClassifier))
    assert not own & set(HOOKS)


def test_the_pretrainer_keeps_only_its_ema_step() -> None:
    assert "on_train_batch_start" not in vars(VoCoPretrainer)
