"""Sample-weighted injury losses and logits -> competition probabilities (ALGORITHMS.md §3.4).

Per head: binary cross-entropy with logits (``bowel``, ``extravasation``) or cross-entropy
(``kidney``, ``liver``, ``spleen``), each sample weighted by the competition weight of its
true class. Reduction ``weighted_mean`` divides by the sum of weights, consistent with the
metric; ``mean`` averages ``w * loss`` (research parity). The total sums the trained heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ctvoco.errors import UserError
from ctvoco.schema import BINARY_TARGETS, CLASS_WEIGHTS, TARGETS

TASKS: dict[str, tuple[str, ...]] = {
    "all": TARGETS,
    "rest_organs": ("bowel", "kidney", "liver", "spleen"),
    **{t: (t,) for t in TARGETS},
}
"""Which heads each task trains (``rest_organs`` is the research code's default)."""

REDUCTIONS = ("weighted_mean", "mean")


def task_targets(task: str) -> tuple[str, ...]:
    """The targets a task trains."""
    try:
        return TASKS[task]
    except KeyError:
        raise UserError(f"model.task must be one of {', '.join(TASKS)}; got {task!r}") from None


def head_loss(
    target: str, logits: Tensor, classes: Tensor, reduction: str = "weighted_mean"
) -> Tensor:
    """Weighted loss of one head.

    Args:
        target: Target name.
        logits: ``(B, 1)`` (binary) or ``(B, 3)``.
        classes: ``(B,)`` int64 true classes.
        reduction: ``weighted_mean`` or ``mean``.

    Returns:
        Scalar loss.
    """
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
    raise UserError(
        f"model.loss_reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}"
    )


def injury_loss(
    logits: dict[str, Tensor],
    labels: Tensor,
    targets: Sequence[str] = TARGETS,
    reduction: str = "weighted_mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Sum of the weighted head losses over ``targets``.

    Args:
        logits: Per-target logits (see :class:`~ctvoco.classify.net.InjuryNet`).
        labels: ``(B, 5)`` int64 classes in schema target order.
        targets: Heads to train.
        reduction: ``weighted_mean`` or ``mean``.

    Returns:
        ``(total, {target: loss})``.
    """
    parts = {t: head_loss(t, logits[t], labels[:, TARGETS.index(t)], reduction) for t in targets}
    return torch.stack(list(parts.values())).sum(), parts


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
