"""The schedules of the research code: a cosine horizon apart from the run, a cyclic cosine."""

from __future__ import annotations

import math

import pytest
import torch

from ctvoco.errors import UserError
from ctvoco.training.schedules import CyclicCosine, WarmupCosine, check_schedule_steps


def research_pretraining_factor(step: int, warmup: int = 5000, total: int = 250000) -> float:
    """The research code's warm-up cosine (commit c456755): step / warmup, then a half cosine."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def test_released_checkpoint_was_taken_at_0975_of_the_peak() -> None:
    schedule = WarmupCosine(5000, 0.0, total_steps=30000, schedule_steps=250000)
    expected = research_pretraining_factor(30000)
    assert expected == pytest.approx(0.97453, abs=1e-5)
    assert schedule(30000) == pytest.approx(expected, abs=1e-12)
    assert schedule(30000) == pytest.approx(0.975, abs=1e-3)


def test_schedule_steps_follows_the_research_formula_after_warmup() -> None:
    schedule = WarmupCosine(5000, 0.0, total_steps=30000, schedule_steps=250000)
    # (past its horizon the research cosine would climb again; its runs never go there)
    for step in (5000, 5001, 12345, 29999, 30000, 100000, 249999, 250000):
        assert schedule(step) == pytest.approx(research_pretraining_factor(step), abs=1e-12)
    # warm-up: ctvoco's first step already trains ((step + 1) / warmup), the research code's
    # is 0 (step / warmup); they differ by 1 / warmup there only
    assert schedule(0) - research_pretraining_factor(0) == pytest.approx(1 / 5000)


def test_without_schedule_steps_the_run_length_is_the_horizon() -> None:
    assert WarmupCosine(5000, 0.0, total_steps=30000)(30000) == pytest.approx(0.0)
    assert WarmupCosine(5000, 0.0, total_steps=30000, schedule_steps=None)(30000) == 0.0


def test_schedule_steps_needs_no_run_length() -> None:
    schedule = WarmupCosine(10, 0.0, schedule_steps=110)
    assert schedule(60) == pytest.approx(0.5)


@pytest.mark.parametrize("value", [0, 10, -5, 12.5, True, "100"])
def test_check_schedule_steps_refuses_bad_values(value) -> None:
    with pytest.raises(UserError, match=r"model\.module\.schedule_steps"):
        check_schedule_steps("model.module", value, warmup_steps=10)


def test_check_schedule_steps_accepts_none_and_a_longer_horizon() -> None:
    check_schedule_steps("model.module", None, warmup_steps=10)
    check_schedule_steps("model.module", 11, warmup_steps=10)


# --------------------------------------------------------------------------- cyclic cosine
def torch_cosine_annealing(steps: int, t_max: int, peak: float, floor: float) -> list[float]:
    """LRs of torch's CosineAnnealingLR stepped once per optimiser step (the research code)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=peak)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=floor)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cyclic_cosine_is_the_research_downstream_schedule() -> None:
    peak, floor, half = 1.25e-4, 1.25e-5, 50
    schedule = CyclicCosine(half_period=half, min_lr_ratio=floor / peak)
    expected = torch_cosine_annealing(5 * half + 7, half, peak, floor)
    got = [peak * schedule(step) for step in range(len(expected))]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_cyclic_cosine_returns_to_the_peak_every_two_half_periods() -> None:
    schedule = CyclicCosine(half_period=5000, min_lr_ratio=0.1)
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(5000) == pytest.approx(0.1)
    assert schedule(10000) == pytest.approx(1.0)
    assert schedule(15000) == pytest.approx(0.1)
    assert schedule(2500) == pytest.approx(schedule(7500)) == pytest.approx(0.55)
    assert schedule(12345) == pytest.approx(schedule(2345))


def test_cyclic_cosine_warmup_then_cycles_from_the_end_of_warmup() -> None:
    schedule = CyclicCosine(half_period=10, min_lr_ratio=0.0, warmup_steps=4)
    assert [schedule(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(14) == pytest.approx(0.0)
    assert schedule(24) == pytest.approx(1.0)


def test_cyclic_cosine_resumes_exactly() -> None:
    """A pure function of the step: a scheduler rebuilt from a saved state gives the same LRs."""

    def build():
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([param], lr=1.0)
        lam = CyclicCosine(half_period=7, min_lr_ratio=0.2)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lam)

    optimizer, scheduler = build()
    for _ in range(11):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    rest = []
    for _ in range(9):
        optimizer.step()
        scheduler.step()
        rest.append(optimizer.param_groups[0]["lr"])
    optimizer2, scheduler2 = build()
    optimizer2.load_state_dict(optimizer.state_dict())
    scheduler2.load_state_dict(state)
    resumed = []
    for _ in range(9):
        optimizer2.step()
        scheduler2.step()
        resumed.append(optimizer2.param_groups[0]["lr"])
    assert resumed == pytest.approx(rest, abs=1e-15)


@pytest.mark.parametrize("half_period", [0, -3, 2.5, True])
def test_cyclic_cosine_refuses_a_bad_half_period(half_period) -> None:
    with pytest.raises(UserError, match="half_period"):
        CyclicCosine(half_period=half_period)
