"""Tests for ctvoco.training.schedules.warmup_cosine."""

from __future__ import annotations

import itertools
import math

import pytest

from ctvoco.training.schedules import warmup_cosine

# (step, warmup_steps, total_steps, min_ratio, expected factor)
TEST_CASES = [
    # Linear warm-up: (step + 1) / warmup, so the first step already trains.
    (0, 10, 100, 0.0, 0.1),
    (4, 10, 100, 0.0, 0.5),
    (9, 10, 100, 0.0, 1.0),
    # Peak at the end of warm-up, then cosine.
    (10, 10, 100, 0.0, 1.0),
    (55, 10, 100, 0.0, 0.5),  # half way through the cosine
    (100, 10, 100, 0.0, 0.0),
    (100, 10, 100, 0.2, 0.2),
    (55, 10, 100, 0.2, 0.6),
    # Past the end it stays at min_ratio.
    (150, 10, 100, 0.1, 0.1),
    # No warm-up: cosine from step 0.
    (0, 0, 4, 0.0, 1.0),
    (2, 0, 4, 0.0, 0.5),
    (4, 0, 4, 0.0, 0.0),
    # Warm-up longer than the run: never leaves warm-up.
    (3, 10, 5, 0.0, 0.4),
    # warmup == total: cosine span clamps to 1 step.
    (10, 10, 10, 0.0, 1.0),
    (11, 10, 10, 0.0, 0.0),
]


@pytest.mark.parametrize(("step", "warmup", "total", "min_ratio", "expected"), TEST_CASES)
def test_warmup_cosine_values(step, warmup, total, min_ratio, expected):
    assert warmup_cosine(step, warmup, total, min_ratio) == pytest.approx(expected, abs=1e-12)


def test_matches_reference_formula():
    warmup, total, min_ratio = 5, 40, 0.05
    for step in range(total + 3):
        if step < warmup:
            expected = (step + 1) / warmup
        else:
            progress = min(1.0, (step - warmup) / (total - warmup))
            expected = min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * progress)) / 2
        assert warmup_cosine(step, warmup, total, min_ratio) == pytest.approx(expected)


@pytest.mark.parametrize("min_ratio", [0.0, 0.3])
def test_shape_of_the_schedule(min_ratio):
    warmup, total = 8, 50
    values = [warmup_cosine(s, warmup, total, min_ratio) for s in range(total + 1)]
    assert values[0] == pytest.approx(1 / warmup)
    rising, falling = values[:warmup], values[warmup:]
    assert all(a < b for a, b in itertools.pairwise(rising))
    assert max(values) == pytest.approx(1.0)
    assert values[warmup - 1] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(falling))
    assert values[-1] == pytest.approx(min_ratio)
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in values)
    assert all(min_ratio - 1e-12 <= v for v in falling)
