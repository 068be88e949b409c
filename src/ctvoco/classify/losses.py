"""Sample-weighted injury losses and logits -> competition probabilities (docs/algorithms.md §3.3).

Per head: binary cross-entropy with logits (``bowel``, ``extravasation``) or cross-entropy
(``kidney``, ``liver``, ``spleen``), each sample weighted by the competition weight of its
true class. The total sums the trained heads.

Reductions of a mini-batch of ``B`` samples with weights ``w`` and losses ``l``:

- ``metric`` (default): ``sum(w * l) / (B * w_bar)``, ``w_bar`` the mean weight of the
  training set for that head. Its expectation over mini-batches is the competition metric's
  weighted log loss ``sum(w * l) / sum(w)`` over the training set, so training converges to
  the metric's optimum; without a known ``w_bar`` it is ``mean``.
- ``mean``: ``mean(w * l)`` (the research code's). The same optimum; each head is scaled
  by its ``w_bar`` relative to the metric.
- ``weighted_mean``: ``sum(w * l) / sum(w)`` per mini-batch. A ratio of two batch sums: with
  small batches it under-weights the rare injured samples and biases the predictions
  towards "healthy" (kept for comparison only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ctvoco.errors import look_up_option
from ctvoco.labels import BINARY_TARGETS, CLASS_WEIGHTS, TARGETS

TASKS: dict[str, tuple[str, ...]] = {
    "all": TARGETS,
    "rest_organs": ("bowel", "kidney", "liver", "spleen"),
    **{t: (t,) for t in TARGETS},
}
"""Which heads each task trains (``rest_organs`` is the research code's default)."""

REDUCTIONS = ("metric", "mean", "weighted_mean")


def task_targets(task: str) -> tuple[str, ...]:
    """The targets a task trains.

    Raises:
        ArgumentError: ``task`` is not one of :data:`TASKS`.
    """
    return TASKS[look_up_option("task", task, TASKS)]


def head_loss(
    target: str,
    logits: Tensor,
    classes: Tensor,
    reduction: str = "metric",
    mean_weight: float | None = None,
) -> Tensor:
    """Weighted loss of one head.

    Args:
        target: Target name.
        logits: ``(B, 1)`` (binary) or ``(B, 3)``.
        classes: ``(B,)`` int64 true classes.
        reduction: One of :data:`REDUCTIONS` (see the module docstring).
        mean_weight: The training set's mean sample weight of this head (``metric`` only;
            ``None``: 1).

    Returns:
        Scalar loss.
    """
    look_up_option("reduction", reduction, REDUCTIONS)
    weights = torch.as_tensor(CLASS_WEIGHTS[target], dtype=torch.float32, device=logits.device)[
        classes
    ]
    logits = logits.float()
    if target in BINARY_TARGETS:
        losses = F.binary_cross_entropy_with_logits(
            logits.squeeze(-1), classes.float(), reduction="none"
        )
    else:
        losses = F.cross_entropy(logits, classes, reduction="none")
    if reduction == "weighted_mean":
        return (weights * losses).sum() / weights.sum()
    if reduction == "mean":
        return (weights * losses).mean()
    return (weights * losses).mean() / (mean_weight or 1.0)


def mean_class_weights(prevalence: Sequence[float]) -> dict[str, float]:
    """Each head's mean competition weight under a class prevalence.

    Args:
        prevalence: The 13 class frequencies in ``sample_submission.csv`` column order (each
            target's classes sum to 1), e.g. the training set's.

    Returns:
        ``{target: sum_c p_c * w_c}``.
    """
    if len(prevalence) != sum(len(CLASS_WEIGHTS[t]) for t in TARGETS):
        raise ValueError(f"expected 13 class frequencies, got {len(prevalence)}")
    means, start = {}, 0
    for target in TARGETS:
        weights = CLASS_WEIGHTS[target]
        part = prevalence[start : start + len(weights)]
        means[target] = float(sum(p * w for p, w in zip(part, weights, strict=True)))
        start += len(weights)
    return means


def injury_loss(
    logits: dict[str, Tensor],
    labels: Tensor,
    targets: Sequence[str] = TARGETS,
    reduction: str = "metric",
    mean_weights: Mapping[str, float] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Sum of the weighted head losses over ``targets``.

    Args:
        logits: Per-target logits (see :class:`~ctvoco.classify.net.InjuryNet`).
        labels: ``(B, 5)`` int64 classes in schema target order.
        targets: Heads to train.
        reduction: One of :data:`REDUCTIONS`.
        mean_weights: Per-head mean training weights (:func:`mean_class_weights`), for
            ``metric``.

    Returns:
        ``(total, {target: loss})``.
    """
    mean_weights = mean_weights or {}
    parts = {
        t: head_loss(t, logits[t], labels[:, TARGETS.index(t)], reduction, mean_weights.get(t))
        for t in targets
    }
    return torch.stack(list(parts.values())).sum(), parts


def masked_slice_loss(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean binary cross-entropy of the per-slice logits over the known targets.

    Args:
        logits: ``(B, S, 2)`` per-slice logits (bowel, extravasation).
        targets: ``(B, S, 2)`` 0/1 per-slice targets.
        mask: ``(B, 2)``: 1 where a series' targets of a channel are known, 0 where unknown.

    Returns:
        ``sum(m * l) / sum(m)`` over every slice and channel (``m`` the mask broadcast over
        slices); 0 (with a gradient) when nothing is known.
    """
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    weights = mask.float()[:, None, :].expand_as(losses)
    return (weights * losses).sum() / weights.sum().clamp_min(1.0)


def probabilities(logits: dict[str, Tensor]) -> Tensor:
    """Logits -> ``(B, 13)`` probabilities in ``sample_submission.csv`` column order.

    Binary heads give ``[1 - sigmoid, sigmoid]``; organ heads a softmax.
    """
    columns = []
    for target in TARGETS:
        z = logits[target].float()
        if target in BINARY_TARGETS:
            p = torch.sigmoid(z.squeeze(-1))
            columns += [1 - p, p]
        else:
            columns += list(torch.softmax(z, dim=-1).unbind(-1))
    return torch.stack(columns, dim=-1)
