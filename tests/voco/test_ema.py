"""Tests for ctvoco.voco.ema."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from ctvoco.voco.ema import cosine_momentum, update_momentum


def make_pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        nn.init.normal_(p)
    # give both BatchNorms different running statistics and step counters
    student.train()(torch.randn(8, 4))
    student(torch.randn(8, 4))
    teacher.train()(torch.randn(8, 4) * 3)
    return student, teacher


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("m", [0.0, 1.0, 0.5, 0.9])
def test_update_momentum(m):
    student, teacher = make_pair()
    s_before, t_before = state(student), state(teacher)
    update_momentum(student, teacher, m)
    t_after = teacher.state_dict()
    for name, t_old in t_before.items():
        s = s_before[name]
        if t_old.is_floating_point():
            expected = m * t_old + (1 - m) * s
            if m in (0.0, 1.0):  # exact copy / exact keep
                expected = s if m == 0.0 else t_old
                assert torch.equal(t_after[name], expected), name
            else:
                torch.testing.assert_close(t_after[name], expected)
        else:  # num_batches_tracked: copied whatever m
            assert torch.equal(t_after[name], s), name
    # the student is untouched
    for name, value in student.state_dict().items():
        assert torch.equal(value, s_before[name])


def test_integer_buffer_copied_and_float_buffer_averaged():
    student, teacher = make_pair()
    assert student[1].num_batches_tracked.item() == 2
    assert teacher[1].num_batches_tracked.item() == 1
    expected_mean = 0.5 * teacher[1].running_mean + 0.5 * student[1].running_mean
    update_momentum(student, teacher, 0.5)
    assert teacher[1].num_batches_tracked.item() == 2
    assert teacher[1].num_batches_tracked.dtype == torch.int64
    torch.testing.assert_close(teacher[1].running_mean, expected_mean)


def test_update_momentum_leaves_no_graph():
    student, teacher = make_pair()
    update_momentum(student, teacher, 0.5)
    assert all(p.grad_fn is None for p in teacher.parameters())
    assert all(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("m", [-0.1, 1.5, float("nan"), "0.5", True])
def test_update_momentum_bad_m(m):
    student, teacher = make_pair()
    with pytest.raises(ValueError, match="m must"):
        update_momentum(student, teacher, m)


def test_update_momentum_mismatched_modules():
    student, _ = make_pair()
    with pytest.raises(ValueError, match="differ"):
        update_momentum(student, nn.Sequential(nn.Linear(4, 3)), 0.5)
    other = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    with pytest.raises(ValueError, match="shape"):
        update_momentum(student, other, 0.5)


SCHEDULE_CASES = [
    # (step, max_steps, base, final, expected)
    (0, 100, 0.99, 1.0, 0.99),
    (100, 100, 0.99, 1.0, 1.0),
    (50, 100, 0.99, 1.0, 0.995),  # cos(π/2) = 0 -> halfway
    (-5, 100, 0.99, 1.0, 0.99),  # clamped
    (500, 100, 0.99, 1.0, 1.0),  # clamped
    (0, 10, 0.9, 0.9, 0.9),  # constant
    (25, 100, 0.0, 1.0, 1 - (2**-0.5 + 1) / 2),
]


@pytest.mark.parametrize(("step", "max_steps", "base", "final", "expected"), SCHEDULE_CASES)
def test_cosine_momentum_values(step, max_steps, base, final, expected):
    assert cosine_momentum(step, max_steps, base, final) == pytest.approx(expected, abs=1e-12)


def test_cosine_momentum_monotonic():
    values = [cosine_momentum(s, 1000) for s in range(1001)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[0] == pytest.approx(0.99)
    assert values[-1] == 1.0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 0), "max_steps must be > 0"),
        ((0, 10, 1.5), "base must be in"),
        ((0, 10, 0.9, -0.1), "final must be in"),
        ((0.5, 10), "step must be an integer"),
        ((0, 10.0), "max_steps must be an integer"),
    ],
)
def test_cosine_momentum_validation(args, match):
    with pytest.raises(ValueError, match=match):
        cosine_momentum(*args)
