"""Did pretraining learn position? Metrics on predicted overlaps, without finetuning.

Compare the intra-volume similarities ``similarity(z_s(random), z_t(base))`` with the overlap
targets. "Learned" means better than geometry alone: the baseline is the best of several
image-blind predictors (the uniform ``1/N``, all zeros, and the per-cell prior: the mean
overlap of each base cell over the views, which also has a rank correlation with the
targets), not a single constant.

Reference: Wu, Zhuang, Xu, Chen, "VoCo", CVPR 2024; 2D-VoCo, arXiv 2601.14593.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["average_ranks", "position_errors", "spearman_correlation"]


def average_ranks(x: Tensor) -> Tensor:
    """0-based ranks of a 1D tensor, ties given their average rank.

    Args:
        x: ``(L,)``.

    Returns:
        ``(L,)`` float64 ranks.
    """
    if x.ndim != 1:
        raise ValueError(f"x must be (L,); got {tuple(x.shape)}")
    sorted_x, order = torch.sort(x)
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    counts = counts.to(torch.float64)
    group_rank = torch.cumsum(counts, 0) - (counts + 1.0) / 2.0  # mean of the tied 0-based ranks
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = group_rank[inverse]
    return ranks


def spearman_correlation(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two same-shape tensors (all elements, average ties).

    Args:
        a: Any shape.
        b: Same shape as ``a``.

    Returns:
        The correlation in ``[-1, 1]``, or NaN if either side is constant (or has < 2 values).
    """
    if a.shape != b.shape:
        raise ValueError(f"b must have the shape of a {tuple(a.shape)}; got {tuple(b.shape)}")
    ra = average_ranks(a.detach().reshape(-1))
    rb = average_ranks(b.detach().reshape(-1))
    ra = ra - ra.mean()
    rb = rb - rb.mean()
    denom = torch.sqrt((ra * ra).sum() * (rb * rb).sum())
    if ra.numel() < 2 or denom.item() == 0.0:
        return math.nan
    return float((ra * rb).sum() / denom)


def position_errors(pred_sim: Tensor, targets: Tensor) -> dict[str, float]:
    """Errors of predicted overlaps against the overlap targets, and image-blind baselines.

    Args:
        pred_sim: Predicted overlaps (clamped cosine similarities), ``(B, K, N)``.
        targets: Overlap targets, ``(B, K, N)``.

    Returns:
        Python floats:

        - ``mae``: mean ``|pred - y|``; ``rank_corr``: Spearman correlation of pred and y
          over all entries (NaN if either is constant);
        - ``trivial_mae``: the uniform predictor ``1/N``; ``zeros_mae``: predicting 0;
        - ``cell_prior_mae`` and ``cell_prior_rank_corr``: predicting for base cell ``n``
          the mean target of that cell over all ``B * K`` views (geometry only: it sees the
          targets of these views, never an image, so it is an optimistic baseline);
        - ``baseline_mae``: the smallest of the three baseline errors;
          ``baseline_rank_corr``: the per-cell prior's correlation.

    Raises:
        ValueError: If the shapes are not equal ``(B, K, N)``.
    """
    for name, x in (("pred_sim", pred_sim), ("targets", targets)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if pred_sim.ndim != 3 or pred_sim.numel() == 0:
        raise ValueError(f"pred_sim must be (B, K, N) and non-empty; got {tuple(pred_sim.shape)}")
    if targets.shape != pred_sim.shape:
        batch, k, n = pred_sim.shape
        raise ValueError(
            f"targets must be (B, K, N) with B={batch}, K={k}, N={n}; got {tuple(targets.shape)}"
        )
    pred = pred_sim.detach().to(torch.float64)
    y = targets.detach().to(device=pred.device, dtype=torch.float64)
    uniform = 1.0 / y.shape[-1]
    prior = y.mean(dim=(0, 1), keepdim=True).expand_as(y)
    baselines = {
        "trivial_mae": float((uniform - y).abs().mean()),
        "zeros_mae": float(y.abs().mean()),
        "cell_prior_mae": float((prior - y).abs().mean()),
    }
    prior_corr = spearman_correlation(prior, y)
    return {
        "mae": float((pred - y).abs().mean()),
        "rank_corr": spearman_correlation(pred, y),
        **baselines,
        "cell_prior_rank_corr": prior_corr,
        "baseline_mae": min(baselines.values()),
        "baseline_rank_corr": prior_corr,
    }
