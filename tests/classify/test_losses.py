"""Tests of :mod:`ctvoco.classify.losses` (docs/algorithms.md §3.3) against hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctvoco.classify.losses import (
    TASKS,
    head_loss,
    injury_loss,
    mean_class_weights,
    probabilities,
    task_targets,
)
from ctvoco.errors import UserError
from ctvoco.labels import CLASS_WEIGHTS, PREDICTION_COLUMNS, TARGET_CLASSES, TARGETS

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
    # the default (``metric``) without a training mean weight is ``mean``; with one it scales
    assert head_loss(target, z, y).item() == pytest.approx(mean, rel=1e-6)
    assert head_loss(target, z, y, "metric", 1.25).item() == pytest.approx(mean / 1.25, rel=1e-6)
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
        _reference("spleen", z.float().numpy(), y.numpy(), "mean"), rel=1e-6
    )


def test_mean_class_weights_of_a_prevalence():
    prevalence = [0.9, 0.1, 0.5, 0.5, 1.0, 0.0, 0.0, 0.5, 0.25, 0.25, 0.0, 0.0, 1.0]
    assert mean_class_weights(prevalence) == pytest.approx(
        {"bowel": 1.1, "extravasation": 3.5, "kidney": 1.0, "liver": 2.0, "spleen": 4.0}
    )
    with pytest.raises(ValueError, match="13"):
        mean_class_weights([1.0])


def test_head_loss_unknown_reduction_raises_user_error():
    with pytest.raises(
        UserError, match=r"^reduction must be one of metric, mean, weighted_mean; got 'sum'"
    ):
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
    with pytest.raises(UserError, match=r"^task must be one of all, rest_organs"):
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


# Class frequencies of the 3,147 patients of RSNA 2023's train.csv (healthy, low/injury, high).
RSNA_FREQUENCIES = {
    "bowel": (0.9797, 0.0203),
    "extravasation": (0.9358, 0.0642),
    "kidney": (0.9421, 0.0369, 0.0210),
    "liver": (0.8977, 0.0814, 0.0209),
    "spleen": (0.8868, 0.0642, 0.0490),
}


def _constant_optimum(target: str, classes: np.ndarray, reduction: str | None) -> np.ndarray:
    """The class probabilities of the constant prediction that minimises the average batch
    loss over three shuffled epochs in batches of 4 (what training with a constant model
    converges to), with the default reduction when ``reduction`` is ``None``."""
    from collections import Counter

    n_classes = len(TARGET_CLASSES[target])
    rng = np.random.default_rng(0)
    # A constant model's batch loss depends only on the classes in the batch: count each
    # composition once (exact, and fast).
    compositions = Counter(
        tuple(sorted(classes[order].tolist()))
        for _ in range(3)
        for order in np.split(rng.permutation(len(classes)), len(classes) // 4)
    )
    batches = [(torch.as_tensor(c), n) for c, n in compositions.items()]
    total_batches = sum(compositions.values())
    z = torch.zeros(1 if target in ("bowel", "extravasation") else n_classes, dtype=torch.float64)
    z.requires_grad_(True)
    optimiser = torch.optim.LBFGS([z], lr=1.0, max_iter=200, tolerance_grad=1e-12)
    options = {} if reduction is None else {"reduction": reduction}

    def closure():
        optimiser.zero_grad()
        total = 0.0
        for labels, count in batches:
            total = total + count * head_loss(target, z.expand(len(labels), -1), labels, **options)
        loss = total / total_batches
        loss.backward()
        return loss

    for _ in range(5):
        optimiser.step(closure)
    z = z.detach()
    if target in ("bowel", "extravasation"):
        p = torch.sigmoid(z[0]).item()
        return np.array([1 - p, p])
    return torch.softmax(z, dim=0).numpy()


def _labelled_table(target: str, size: int = 2000) -> np.ndarray:
    counts = np.round(np.array(RSNA_FREQUENCIES[target]) * size).astype(int)
    counts[0] = size - counts[1:].sum()
    return np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize("target", TARGETS)
def test_the_default_loss_has_the_metrics_constant_optimum(target):
    """The competition metric's best constant prediction is Σ w·y / Σ w per class; training
    with the default loss in mini-batches of 4 must converge to it, not towards healthy."""
    classes = _labelled_table(target)
    weights = np.asarray(CLASS_WEIGHTS[target])[classes]
    onehot = np.eye(len(TARGET_CLASSES[target]))[classes]
    expected = (weights[:, None] * onehot).sum(0) / weights.sum()
    np.testing.assert_allclose(_constant_optimum(target, classes, None), expected, atol=1e-3)


def test_the_batch_ratio_reduction_is_biased_towards_healthy():
    """``weighted_mean`` (Σwℓ/Σw per mini-batch) is kept for comparison: it is not consistent."""
    classes = _labelled_table("extravasation")
    weights = np.asarray(CLASS_WEIGHTS["extravasation"])[classes]
    metric_optimum = (weights * classes).sum() / weights.sum()
    biased = _constant_optimum("extravasation", classes, "weighted_mean")[1]
    assert biased < metric_optimum - 0.02
