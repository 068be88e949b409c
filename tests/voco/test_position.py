"""Tests for ctvoco.voco.position."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from ctvoco.voco.position import average_ranks, position_errors, spearman_correlation
from ctvoco.voco.targets import overlap_targets, sample_random_centers


def random_targets(batch: int = 3, k: int = 4, n: int = 3, r: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = np.stack([sample_random_centers(rng, k, n, r) for _ in range(batch)])
    return overlap_targets(centers, n, r)


def test_perfect_prediction():
    y = random_targets()
    out = position_errors(y.clone(), y)
    assert out["mae"] == 0.0
    assert out["rank_corr"] == pytest.approx(1.0)
    assert out["trivial_mae"] > 0


def test_uniform_prediction_matches_trivial_mae_and_has_no_correlation():
    y = random_targets(seed=1).double()  # float64 so 1/N is the same number on both sides
    out = position_errors(torch.full_like(y, 1 / y.shape[-1]), y)
    assert out["mae"] == pytest.approx(out["trivial_mae"], abs=1e-12)
    assert math.isnan(out["rank_corr"])  # constant prediction


def test_trivial_mae_by_hand():
    # N = 2, y = [[1, 0]] -> |0.5 - 1| = |0.5 - 0| = 0.5; pred [[0.75, 0.25]] -> mae 0.25
    y = torch.tensor([[[1.0, 0.0]]])
    out = position_errors(torch.tensor([[[0.75, 0.25]]]), y)
    picked = {k: out[k] for k in ("mae", "trivial_mae", "zeros_mae", "rank_corr")}
    assert picked == pytest.approx(
        {"mae": 0.25, "trivial_mae": 0.5, "zeros_mae": 0.5, "rank_corr": 1.0}
    )


def test_baselines_by_hand():
    # two views of N = 2 cells: y = [1, 0] and [0, 0.5]; the per-cell prior is [0.5, 0.25]
    y = torch.tensor([[[1.0, 0.0]], [[0.0, 0.5]]])
    out = position_errors(torch.zeros_like(y), y)
    assert out["trivial_mae"] == pytest.approx((0.5 + 0.5 + 0.5 + 0.0) / 4)
    assert out["zeros_mae"] == pytest.approx(1.5 / 4)
    assert out["cell_prior_mae"] == pytest.approx((0.5 + 0.25 + 0.5 + 0.25) / 4)
    assert out["baseline_mae"] == pytest.approx(min(0.375, 0.375, 0.375))
    assert out["baseline_rank_corr"] == out["cell_prior_rank_corr"]


def test_the_baseline_is_the_best_image_blind_predictor():
    """On real VoCo geometry (3 x 3 base grid, random crops) predicting 0 beats 1/N, and the
    per-cell prior correlates with the targets without seeing an image."""
    y = random_targets(batch=64, k=4, n=3, r=16, seed=3).double()
    out = position_errors(torch.rand_like(y), y)
    assert out["zeros_mae"] < out["trivial_mae"]
    assert out["baseline_mae"] == min(out["trivial_mae"], out["zeros_mae"], out["cell_prior_mae"])
    assert out["baseline_mae"] < out["trivial_mae"]
    assert out["cell_prior_rank_corr"] > 0.1


def test_anti_correlated_prediction():
    y = random_targets(seed=2)
    out = position_errors(1.0 - y, y)
    assert out["rank_corr"] == pytest.approx(-1.0)
    assert out["mae"] > out["trivial_mae"]


def test_constant_targets_give_nan():
    y = torch.full((2, 1, 1), 1.0)  # n = 1: every target is 1
    assert math.isnan(position_errors(torch.rand(2, 1, 1), y)["rank_corr"])


RANK_CASES = [
    ([3.0, 1.0, 2.0], [2.0, 0.0, 1.0]),
    ([1.0, 1.0, 0.0, 1.0], [2.0, 2.0, 0.0, 2.0]),  # three ties share (1 + 2 + 3) / 3
    ([0.5, 0.5], [0.5, 0.5]),
]


@pytest.mark.parametrize(("x", "expected"), RANK_CASES)
def test_average_ranks(x, expected):
    torch.testing.assert_close(
        average_ranks(torch.tensor(x)), torch.tensor(expected, dtype=torch.float64)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_matches_scipy_with_ties(seed):
    y = random_targets(seed=seed)  # many ties (zeros, 0.25, ...)
    gen = torch.Generator().manual_seed(seed)
    pred = (y + 0.3 * torch.rand(y.shape, generator=gen)).round(decimals=1)  # ties too
    expected = spearmanr(pred.reshape(-1).numpy(), y.reshape(-1).numpy()).statistic
    assert spearman_correlation(pred, y) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("pred_shape", "target_shape", "match"),
    [
        ((2, 3), (2, 3), "pred_sim must be \\(B, K, N\\)"),
        ((2, 3, 9), (2, 3, 4), "targets must be \\(B, K, N\\) with B=2, K=3, N=9"),
        ((0, 3, 9), (0, 3, 9), "non-empty"),
    ],
)
def test_shape_errors(pred_shape, target_shape, match):
    with pytest.raises(ValueError, match=match):
        position_errors(torch.rand(pred_shape), torch.rand(target_shape))
