"""Dice overlap per organ: counted over whole series, then averaged over series.

A series' Dice for an organ is ``2 |P ∩ T| / (|P| + |T|)`` over all its voxels (``P`` the
predicted voxels of the organ, ``T`` the labelled ones). A series in which the organ is
neither labelled nor predicted says nothing about it and is left out of that organ's mean
(``nan``); one in which it is labelled but not predicted, or predicted but not labelled,
counts 0. Intervals resample patients (:func:`dice_interval`); the floor beside them is
the atlas, each voxel's most frequent training label (:func:`atlas_labels`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor


def overlap_counts(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Voxel counts for Dice: per organ label ``1 .. num_classes - 1``.

    Args:
        pred: Predicted labels, any shape, integer.
        target: Labels of the same shape.
        num_classes: The background and the organs.

    Returns:
        ``(num_classes - 1, 3)`` float64: intersection, predicted and labelled voxels.
    """
    labels = torch.arange(1, num_classes, device=pred.device).view(-1, 1)
    p = pred.reshape(1, -1) == labels
    t = target.reshape(1, -1) == labels
    return torch.stack([(p & t).sum(1), p.sum(1), t.sum(1)], dim=1).to(torch.float64)


def dice_from_counts(counts: Tensor) -> Tensor:
    """``(..., 3)`` counts -> ``(...)`` Dice, ``nan`` where the organ is absent from both."""
    intersection, predicted, labelled = counts.unbind(-1)
    total = predicted + labelled
    return torch.where(total > 0, 2 * intersection / total.clamp(min=1), torch.nan)


def organ_dice(counts: Mapping[str, Tensor], organs: Mapping[str, int]) -> dict[str, float]:
    """Mean Dice per organ over series, and their mean.

    Args:
        counts: Per series, its ``(num_classes - 1, 3)`` :func:`overlap_counts`.
        organs: Organ name -> label (1-based), e.g. :data:`~ctvoco.io.masks.MASK_LABELS`.

    Returns:
        ``{organ: mean Dice over the series where it is labelled or predicted}`` (``nan``
        when none) and ``mean``, the mean over the organs that have a value.
    """
    if not counts:
        return {**{name: float("nan") for name in organs}, "mean": float("nan")}
    dice = dice_from_counts(torch.stack([c.cpu() for c in counts.values()])).numpy()
    out = {}
    for name, label in organs.items():
        values = dice[:, label - 1]
        values = values[~np.isnan(values)]
        out[name] = float(values.mean()) if values.size else float("nan")
    present = [v for v in out.values() if not np.isnan(v)]
    out["mean"] = float(np.mean(present)) if present else float("nan")
    return out


def series_dice(counts: Mapping[str, Tensor]) -> tuple[list[str], np.ndarray]:
    """``(keys, (S, organs) Dice)`` of each series, ``nan`` where an organ is in neither."""
    keys = sorted(counts)
    if not keys:
        return [], np.empty((0, 0))
    stacked = torch.stack([counts[k].cpu() for k in keys])
    return keys, dice_from_counts(stacked).numpy()


def dice_interval(
    dice: np.ndarray,
    groups: Sequence[str],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap interval of each organ's mean Dice, resampling patients with replacement.

    Args:
        dice: ``(S, organs)`` per-series Dice (``nan``: not counted), see :func:`series_dice`.
        groups: The patient of each series: a patient's series are drawn together.
        resamples: Bootstrap draws.
        seed: Their seed.
        level: Coverage of the interval.

    Returns:
        ``(low, high)``, each ``(organs + 1,)``: one per organ, then the mean over organs
        (as :func:`organ_dice` takes it); ``nan`` where an organ is in no series.
    """
    patients = sorted(set(groups))
    rows = [np.flatnonzero(np.asarray(groups) == p) for p in patients]
    rng = np.random.default_rng(seed)
    means = np.full((resamples, dice.shape[1] + 1), np.nan)
    for b in range(resamples):
        picked = np.concatenate([rows[i] for i in rng.integers(len(patients), size=len(patients))])
        sample = dice[picked]
        seen = ~np.isnan(sample)
        with np.errstate(invalid="ignore", divide="ignore"):
            organs = np.where(seen.any(0), np.nansum(sample, 0) / seen.sum(0), np.nan)
        means[b, :-1] = organs
        if not np.isnan(organs).all():
            means[b, -1] = np.nanmean(organs)
    tail = (1 - level) / 2 * 100
    low, high = np.full(means.shape[1], np.nan), np.full(means.shape[1], np.nan)
    for j in range(means.shape[1]):
        column = means[:, j][~np.isnan(means[:, j])]
        if column.size:
            low[j], high[j] = np.percentile(column, [tail, 100 - tail])
    return low, high


def atlas_labels(masks: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """The constant segmentation: each voxel's most frequent label over training masks.

    The floor a segmenter must beat: it knows where each organ usually lies in the cached
    array and nothing about the image.

    Args:
        masks: ``(D, H, W)`` label maps of one shape (cached masks).
        num_classes: The background and the organs.

    Returns:
        ``(D, H, W)`` uint8 labels.
    """
    counts = np.zeros((num_classes, *masks[0].shape), dtype=np.int32)
    for mask in masks:
        for label in range(num_classes):
            counts[label] += np.asarray(mask) == label
    return counts.argmax(0).astype(np.uint8)
