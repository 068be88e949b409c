"""Tests of :mod:`ctvoco.classify.losses` (ALGORITHMS.md §3.3, §3.4) against hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctvoco.classify.losses import TASKS, head_loss, injury_loss, probabilities, task_targets
from ctvoco.errors import UserError
from ctvoco.schema import CLASS_WEIGHTS, PREDICTION_COLUMNS, TARGET_CLASSES, TARGETS

LN2, LN3 = math.log(2.0), math.log(3.0)

# Each case: target, logits, true classes, expected weighted_mean, expected mean.
# The per-sample losses and weights are written out in the comments.
HAND_CASES = [
    (
        # bowel (weights healthy 1, injury 2), BCE with logits:
        #   z=0,    y=0: -log(1 - 1/2) = ln 2,     w=1
        #   z=ln 3, y=1: -log(3/4)     = ln(4/3),  w=2
        #   z=ln 3, y=0: -log(1/4)     = ln 4,     w=1
        # sum w*l = ln2 + 2 ln(4/3) + ln4 = 7 ln2 - 2 ln3; sum w = 4; n = 3
        "bowel",
        [[0.0], [LN3], [LN3]],
        [0, 1, 0],
        (7 * LN2 - 2 * LN3) / 4,
        (7 * LN2 - 2 * LN3) / 3,
    ),
    (
        # extravasation (weights 1 / 6):
        #   z=ln 3, y=1: ln(4/3), w=6
        #   z=ln 3, y=0: ln 4,    w=1
        #   z=0,    y=1: ln 2,    w=6
        # sum w*l = 6 ln(4/3) + ln4 + 6 ln2 = 20 ln2 - 6 ln3; sum w = 13; n = 3
        "extravasation",
        [[LN3], [LN3], [0.0]],
        [1, 0, 1],
        (20 * LN2 - 6 * LN3) / 13,
        (20 * LN2 - 6 * LN3) / 3,
    ),
    (
        # kidney (weights healthy 1, low 2, high 4), cross-entropy:
        #   [0, 0, 0],     y=2: -log(1/3) = ln 3, w=4
        #   [ln2, 0, 0],   y=0: -log(2/4) = ln 2, w=1
        #   [ln2, 0, 0],   y=1: -log(1/4) = ln 4, w=2
        #   [0, ln2, 0],   y=1: -log(2/4) = ln 2, w=2
        # sum w*l = 4 ln3 + ln2 + 4 ln2 + 2 ln2 = 4 ln3 + 7 ln2; sum w = 9; n = 4
        "kidney",
        [[0.0, 0.0, 0.0], [LN2, 0.0, 0.0], [LN2, 0.0, 0.0], [0.0, LN2, 0.0]],
        [2, 0, 1, 1],
        (4 * LN3 + 7 * LN2) / 9,
        (4 * LN3 + 7 * LN2) / 4,
    ),
    (
        # liver, every sample healthy (weight 1): the two reductions agree.
        #   [ln3, 0, 0], y=0: -log(3/5) = ln5 - ln3
        #   [0, 0, 0],   y=0: ln 3
        "liver",
        [[LN3, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [0, 0],
        math.log(5.0) / 2,
        math.log(5.0) / 2,
    ),
]


@pytest.mark.parametrize(("target", "logits", "classes", "weighted", "mean"), HAND_CASES)
def test_head_loss_matches_hand_arithmetic(target, logits, classes, weighted, mean):
    z = torch.tensor(logits, dtype=torch.float32)
    y = torch.tensor(classes, dtype=torch.int64)
    assert head_loss(target, z, y).item() == pytest.approx(weighted, rel=1e-6)
    assert head_loss(target, z, y, "weighted_mean").item() == pytest.approx(weighted, rel=1e-6)
    assert head_loss(target, z, y, "mean").item() == pytest.approx(mean, rel=1e-6)


def _reference(target: str, logits: np.ndarray, classes: np.ndarray, reduction: str) -> float:
    """Loop-based weighted (binary) cross-entropy in float64."""
    weights = np.array(CLASS_WEIGHTS[target])[classes]
    losses = []
    for z, y in zip(logits, classes, strict=True):
        if len(z) == 1:
            p = 1.0 / (1.0 + math.exp(-z[0]))
            losses.append(-math.log(p) if y == 1 else -math.log(1.0 - p))
        else:
            log_norm = math.log(sum(math.exp(v) for v in z))
            losses.append(log_norm - z[y])
    losses_arr = np.array(losses)
    if reduction == "weighted_mean":
        return float((weights * losses_arr).sum() / weights.sum())
    return float((weights * losses_arr).mean())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_head_loss_matches_reference_on_random_batches(target, reduction):
    rng = np.random.default_rng(TARGETS.index(target))
    k = len(TARGET_CLASSES[target])
    logits = rng.normal(0, 2, size=(9, 1 if k == 2 else k))
    classes = rng.integers(0, k, size=9)
    got = head_loss(target, torch.tensor(logits), torch.tensor(classes), reduction).item()
    assert got == pytest.approx(_reference(target, logits, classes, reduction), rel=1e-5)


def test_weighted_mean_and_mean_differ_by_the_weight_total():
    z = torch.tensor([[0.3], [-1.0], [2.0], [0.1]])
    y = torch.tensor([1, 0, 1, 1])
    weights = torch.tensor([6.0, 1.0, 6.0, 6.0])
    weighted = head_loss("extravasation", z, y, "weighted_mean")
    mean = head_loss("extravasation", z, y, "mean")
    assert (mean * len(y)).item() == pytest.approx((weighted * weights.sum()).item(), rel=1e-6)


def test_head_loss_accepts_low_precision_logits():
    z = torch.tensor([[0.5, -0.2, 0.1], [0.0, 1.0, 0.0]], dtype=torch.bfloat16)
    y = torch.tensor([2, 1])
    loss = head_loss("spleen", z, y)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(
        _reference("spleen", z.float().numpy(), y.numpy(), "weighted_mean"), rel=1e-6
    )


def test_head_loss_unknown_reduction_raises_user_error():
    with pytest.raises(UserError, match="loss_reduction"):
        head_loss("bowel", torch.zeros(2, 1), torch.tensor([0, 1]), "sum")


def test_head_loss_has_gradients():
    z = torch.zeros(3, 3, requires_grad=True)
    head_loss("liver", z, torch.tensor([0, 1, 2])).backward()
    assert z.grad is not None
    assert torch.isfinite(z.grad).all()


# --------------------------------------------------------------------------- tasks
def _logits(b: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        t: torch.randn(b, 1 if len(TARGET_CLASSES[t]) == 2 else 3, generator=g) for t in TARGETS
    }


def _labels(b: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [torch.randint(0, len(TARGET_CLASSES[t]), (b,), generator=g) for t in TARGETS], dim=1
    )


TASK_CASES = [
    ("all", TARGETS),
    ("rest_organs", ("bowel", "kidney", "liver", "spleen")),
    *[(t, (t,)) for t in TARGETS],
]


@pytest.mark.parametrize(("task", "expected"), TASK_CASES)
def test_task_targets(task, expected):
    assert task_targets(task) == expected
    assert TASKS[task] == expected


def test_rest_organs_excludes_extravasation():
    assert "extravasation" not in task_targets("rest_organs")
    assert "extravasation" in task_targets("all")


@pytest.mark.parametrize("task", ["bogus", "", "organs", "All", "any_injury"])
def test_unknown_task_raises_user_error(task):
    with pytest.raises(UserError, match=r"model\.task"):
        task_targets(task)


@pytest.mark.parametrize(("task", "expected"), TASK_CASES)
@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_injury_loss_sums_the_heads_of_the_task(task, expected, reduction):
    logits, labels = _logits(), _labels()
    total, parts = injury_loss(logits, labels, task_targets(task), reduction)
    assert tuple(parts) == expected
    for t in expected:
        assert parts[t].item() == pytest.approx(
            head_loss(t, logits[t], labels[:, TARGETS.index(t)], reduction).item()
        )
    assert total.item() == pytest.approx(sum(p.item() for p in parts.values()), rel=1e-6)


def test_injury_loss_ignores_heads_outside_the_task():
    logits, labels = _logits(), _labels()
    labels[:, TARGETS.index("extravasation")] = 0  # +100 logits are then badly wrong
    base, _ = injury_loss(logits, labels, task_targets("rest_organs"))
    logits["extravasation"] = logits["extravasation"] + 100.0
    changed, _ = injury_loss(logits, labels, task_targets("rest_organs"))
    assert changed.item() == base.item()
    full, _ = injury_loss(logits, labels, task_targets("all"))
    assert full.item() > base.item()


# --------------------------------------------------------------------------- probabilities
def test_probabilities_shape_order_and_groups():
    logits = _logits(b=5, seed=3)
    probs = probabilities(logits)
    assert probs.shape == (5, len(PREDICTION_COLUMNS)) == (5, 13)
    col = {c: i for i, c in enumerate(PREDICTION_COLUMNS)}
    for t in ("bowel", "extravasation"):
        p = torch.sigmoid(logits[t][:, 0])
        assert torch.allclose(probs[:, col[f"{t}_injury"]], p)
        assert torch.allclose(probs[:, col[f"{t}_healthy"]], 1 - p)
    for t in ("kidney", "liver", "spleen"):
        cols = [col[f"{t}_{c}"] for c in TARGET_CLASSES[t]]
        assert torch.allclose(probs[:, cols], torch.softmax(logits[t], dim=-1))
    start = 0
    for t in TARGETS:
        k = len(TARGET_CLASSES[t])
        assert torch.allclose(probs[:, start : start + k].sum(1), torch.ones(5), atol=1e-6)
        start += k
    assert ((probs >= 0) & (probs <= 1)).all()


def test_probabilities_of_zero_logits():
    logits = {t: torch.zeros(2, 1 if len(TARGET_CLASSES[t]) == 2 else 3) for t in TARGETS}
    expected = torch.tensor([0.5, 0.5, 0.5, 0.5, *[1 / 3] * 9])
    assert torch.allclose(probabilities(logits), expected.expand(2, 13))


def test_probabilities_are_float32_for_bf16_logits():
    logits = {t: v.to(torch.bfloat16) for t, v in _logits(b=2).items()}
    probs = probabilities(logits)
    assert probs.dtype == torch.float32
    assert probs.shape == (2, 13)
