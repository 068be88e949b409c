"""Tests for ctvoco.segment.dice against hand-computed overlaps."""

from __future__ import annotations

import math

import numpy as np
import torch

from ctvoco.segment.dice import (
    atlas_labels,
    dice_from_counts,
    dice_interval,
    organ_dice,
    overlap_counts,
    series_dice,
)

ORGANS = {"liver": 1, "spleen": 2, "bowel": 3}


def test_counts_by_hand():
    target = torch.tensor([[1, 1, 1, 0], [2, 2, 0, 0]])
    pred = torch.tensor([[1, 1, 0, 0], [2, 0, 0, 3]])
    counts = overlap_counts(pred, target, 4)
    assert counts.tolist() == [[2, 2, 3], [1, 1, 2], [0, 1, 0]]
    dice = dice_from_counts(counts)
    assert torch.allclose(dice, torch.tensor([4 / 5, 2 / 3, 0.0], dtype=torch.float64))


def test_an_organ_in_neither_is_nan_and_left_out():
    empty = overlap_counts(
        torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long), 4
    )
    assert torch.isnan(dice_from_counts(empty)).all()
    perfect = overlap_counts(
        torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long), 4
    )
    result = organ_dice({"a": empty, "b": perfect}, ORGANS)
    assert result["liver"] == 1.0  # series "a" has no liver: not averaged in
    assert math.isnan(result["spleen"]) and math.isnan(result["bowel"])
    assert result["mean"] == 1.0


def test_mean_over_series_not_over_voxels():
    big = torch.tensor([[100.0, 100.0, 100.0], [0, 0, 0], [0, 0, 0]], dtype=torch.float64)
    small = torch.tensor([[0.0, 1.0, 1.0], [0, 0, 0], [0, 0, 0]], dtype=torch.float64)
    result = organ_dice({"big": big, "small": small}, ORGANS)
    assert result["liver"] == 0.5  # (1 + 0) / 2, whatever the sizes


def test_no_series():
    result = organ_dice({}, ORGANS)
    assert all(math.isnan(v) for v in result.values())


def test_interval_resamples_patients_by_hand():
    # two patients: one with two series at Dice 1, one with one series at Dice 0
    dice = np.array([[1.0, np.nan], [1.0, np.nan], [0.0, 0.5]])
    low, high = dice_interval(dice, ["a", "a", "b"], resamples=400, seed=0)
    # organ 0: draws {a,a}: 1, {b,b}: 0, {a,b}: 2/3; organ 1 only where b is drawn: 0.5
    assert low[0] == 0.0 and high[0] == 1.0
    assert low[1] == high[1] == 0.5
    assert low[2] <= high[2] and low.shape == (3,)
    same = dice_interval(dice, ["a", "b", "c"], resamples=50, seed=1)
    assert same[0].shape == (3,)


def test_interval_of_one_series_is_its_value():
    low, high = dice_interval(np.array([[0.8, 0.6]]), ["p"], resamples=20)
    np.testing.assert_allclose(low, [0.8, 0.6, 0.7])
    np.testing.assert_allclose(high, [0.8, 0.6, 0.7])


def test_series_dice_orders_by_key():
    counts = {"b": torch.tensor([[1.0, 1.0, 1.0]]), "a": torch.tensor([[0.0, 1.0, 1.0]])}
    keys, dice = series_dice(counts)
    assert keys == ["a", "b"] and dice[:, 0].tolist() == [0.0, 1.0]


def test_atlas_is_the_most_frequent_label_per_voxel():
    masks = [np.array([[1, 0, 2]]), np.array([[1, 2, 2]]), np.array([[0, 2, 1]])]
    assert atlas_labels(masks, 3).tolist() == [[1, 2, 2]]
