"""Paired, seed-and-patient bootstrap statistics of the competition score
(:mod:`ctvoco.metrics.paired`)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ctvoco.errors import UserError
from ctvoco.labels import (
    PREDICTION_COLUMNS,
    SCORE_COLUMNS,
    TARGET_CLASSES,
    TARGET_SLICES,
    TARGETS,
    labels_from_classes,
)
from ctvoco.metrics import constant_floors, score_arrays, target_auc
from ctvoco.metrics.paired import (
    PairedDifference,
    _weighted_auc,
    auc_intervals,
    floor_intervals,
    paired_difference,
    score_interval,
    target_auc_arrays,
)

N_CLASSES = [len(TARGET_CLASSES[t]) for t in TARGETS]


# --------------------------------------------------------------------------- helpers


def _onehot(rng: np.random.Generator, n: int, *, every_class: bool = True) -> np.ndarray:
    """Random ``(n, 13)`` one-hot labels; with ``every_class`` each class appears."""
    classes = np.stack([rng.integers(0, k, size=n) for k in N_CLASSES], axis=1)
    if every_class:
        for j, k in enumerate(N_CLASSES):
            classes[:k, j] = np.arange(k)
    labels = labels_from_classes(list(range(n)), classes)
    return labels[list(PREDICTION_COLUMNS)].to_numpy(dtype=np.float64, copy=True)


def _normalise(values: np.ndarray) -> np.ndarray:
    """Divide each target's group of ``(..., 13)`` values by its sum."""
    out = np.empty_like(values)
    start = 0
    for k in N_CLASSES:
        group = values[..., start : start + k]
        out[..., start : start + k] = group / group.sum(axis=-1, keepdims=True)
        start += k
    return out


def _probs(rng: np.random.Generator, onehot: np.ndarray, skill: float, seeds: int = 1):
    """``(seeds, N, 13)`` normalised predictions: noise pulled towards the truth by ``skill``."""
    noise = rng.uniform(0.05, 1.0, size=(seeds, *onehot.shape))
    return _normalise(noise + skill * onehot)


def _score(onehot: np.ndarray, probs: np.ndarray) -> float:
    return score_arrays(onehot, probs)["score"]


def _exact_quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (inverse CDF) of equally likely ``values``."""
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def _population_std(values: list[float]) -> float:
    return float(np.std(values))


# --------------------------------------------------------------------------- target_auc_arrays


def test_target_auc_arrays_is_the_core_of_target_auc() -> None:
    rng = np.random.default_rng(0)
    n = 40
    onehot = _onehot(rng, n)
    probs = _probs(rng, onehot, skill=0.5)[0]
    classes = np.stack([onehot[:, cols].argmax(axis=1) for cols in TARGET_SLICES.values()], 1)
    labels = labels_from_classes(list(range(n)), classes)
    frame = labels[["patient_id"]].copy()
    frame[list(PREDICTION_COLUMNS)] = probs
    assert target_auc_arrays(onehot, probs) == pytest.approx(target_auc(labels, frame))

    healthy = onehot.copy()
    healthy[:, 2:4] = [1.0, 0.0]  # extravasation: nobody injured
    result = target_auc_arrays(healthy, probs)
    assert set(result) == set(SCORE_COLUMNS)
    assert math.isnan(result["extravasation"])
    assert not math.isnan(result["bowel"])


# --------------------------------------------------------------------------- hand-computed


def test_one_seed_three_patients_matches_the_enumerated_bootstrap() -> None:
    """S = 1, N = 3: the 27 equally likely patient resamples, scored with score_arrays."""
    rng = np.random.default_rng(1)
    onehot = _onehot(rng, 3, every_class=False)
    probs_a = _probs(rng, onehot, skill=0.2)
    probs_b = _probs(rng, onehot, skill=1.0)
    diffs = []
    for pick in itertools.product(range(3), repeat=3):
        rows = list(pick)
        diffs.append(
            _score(onehot[rows], probs_a[0, rows]) - _score(onehot[rows], probs_b[0, rows])
        )
    level = 1.0 - 5.0 / 27.0  # quantiles 2.5 / 27 and 24.5 / 27: between two atoms
    result = paired_difference(onehot, probs_a, probs_b, n_resamples=20000, seed=3, level=level)
    assert isinstance(result, PairedDifference)
    assert result.seeds == 1
    assert result.difference == pytest.approx(
        _score(onehot, probs_a[0]) - _score(onehot, probs_b[0])
    )
    assert result.low == pytest.approx(_exact_quantile(diffs, 2.5 / 27), abs=1e-9)
    assert result.high == pytest.approx(_exact_quantile(diffs, 24.5 / 27), abs=1e-9)
    assert result.se == pytest.approx(_population_std(diffs), rel=0.03)


def test_two_seeds_two_patients_matches_the_enumerated_two_level_bootstrap() -> None:
    """S = 2, N = 2: 4 seed picks x 4 patient picks, the same for both arms and all seeds."""
    rng = np.random.default_rng(2)
    onehot = _onehot(rng, 2, every_class=False)
    probs_a = _probs(rng, onehot, skill=0.3, seeds=2)
    probs_b = _probs(rng, onehot, skill=0.8, seeds=2)

    def diff(seeds: list[int], rows: list[int]) -> float:
        return float(
            np.mean(
                [
                    _score(onehot[rows], probs_a[s, rows]) - _score(onehot[rows], probs_b[s, rows])
                    for s in seeds
                ]
            )
        )

    both = [
        diff(list(s), list(p))
        for s in itertools.product(range(2), repeat=2)
        for p in itertools.product(range(2), repeat=2)
    ]
    level = 1.0 - 5.0 / 16.0
    result = paired_difference(onehot, probs_a, probs_b, n_resamples=20000, seed=4, level=level)
    assert result.low == pytest.approx(_exact_quantile(both, 2.5 / 16), abs=1e-9)
    assert result.high == pytest.approx(_exact_quantile(both, 13.5 / 16), abs=1e-9)
    assert result.se == pytest.approx(_population_std(both), rel=0.03)

    patients_only = [diff([0, 1], list(p)) for p in itertools.product(range(2), repeat=2)]
    fixed = paired_difference(
        onehot, probs_a, probs_b, n_resamples=20000, seed=4, level=0.75, resample_seeds=False
    )
    assert fixed.low == pytest.approx(_exact_quantile(patients_only, 0.5 / 4), abs=1e-9)
    assert fixed.high == pytest.approx(_exact_quantile(patients_only, 3.5 / 4), abs=1e-9)
    assert fixed.se == pytest.approx(_population_std(patients_only), rel=0.03)


def test_identical_arms_differ_by_exactly_zero() -> None:
    rng = np.random.default_rng(3)
    onehot = _onehot(rng, 50)
    probs = _probs(rng, onehot, skill=0.5, seeds=3)
    result = paired_difference(onehot, probs, probs.copy(), n_resamples=200)
    assert result == PairedDifference(
        difference=0.0, low=0.0, high=0.0, se=0.0, mde=0.0, wins=0, seeds=3
    )


# --------------------------------------------------------------------------- conventions


def test_a_better_arm_b_gives_a_positive_difference_and_wins() -> None:
    rng = np.random.default_rng(4)
    onehot = _onehot(rng, 200)
    worse = _probs(rng, onehot, skill=0.1, seeds=4)
    better = _probs(rng, onehot, skill=2.0, seeds=4)
    forward = paired_difference(onehot, worse, better, n_resamples=300)
    assert forward.difference > 0 and forward.low > 0
    assert forward.wins == 4 and forward.seeds == 4
    backward = paired_difference(onehot, better, worse, n_resamples=300)
    assert backward.difference == pytest.approx(-forward.difference)
    assert backward.high < 0 and backward.wins == 0


def test_seeds_are_paired_across_arms() -> None:
    """Arm b is a little better than arm a on every seed, while the seeds differ a lot:
    paired, the interval is narrow and positive; pairing seed 0 of a with seed 1 of b
    (and back) turns it into a wide interval across zero, and b wins only one seed."""
    rng = np.random.default_rng(5)
    onehot = _onehot(rng, 300)
    noise = rng.uniform(0.05, 1.0, size=(2, *onehot.shape))
    skills = np.array([0.2, 3.0])[:, None, None]
    probs_a = _normalise(noise + skills * onehot)
    probs_b = _normalise(noise + (skills + 0.1) * onehot)
    paired = paired_difference(onehot, probs_a, probs_b, n_resamples=500)
    assert paired.wins == 2
    assert paired.low > 0
    swapped = paired_difference(onehot, probs_a, probs_b[::-1], n_resamples=500)
    assert swapped.wins == 1
    assert swapped.low < 0 < swapped.high
    assert swapped.se > 5 * paired.se


def test_mde_is_the_se_times_the_two_normal_quantiles() -> None:
    rng = np.random.default_rng(6)
    onehot = _onehot(rng, 80)
    probs_a = _probs(rng, onehot, skill=0.3, seeds=2)
    probs_b = _probs(rng, onehot, skill=0.5, seeds=2)
    result = paired_difference(onehot, probs_a, probs_b, n_resamples=300)
    assert result.se > 0
    # z_0.975 + z_0.8 = 1.959964 + 0.841621
    assert result.mde == pytest.approx(2.801585 * result.se, rel=1e-6)
    other = paired_difference(onehot, probs_a, probs_b, n_resamples=300, level=0.9, power=0.5)
    assert other.se == pytest.approx(result.se)  # the level does not change the resamples
    assert other.mde == pytest.approx(1.644854 * other.se, rel=1e-6)


def test_the_resampling_repeats_with_its_seed() -> None:
    rng = np.random.default_rng(7)
    onehot = _onehot(rng, 60)
    probs_a = _probs(rng, onehot, skill=0.3, seeds=3)
    probs_b = _probs(rng, onehot, skill=0.4, seeds=3)
    first = paired_difference(onehot, probs_a, probs_b, n_resamples=200, seed=11)
    assert paired_difference(onehot, probs_a, probs_b, n_resamples=200, seed=11) == first
    other = paired_difference(onehot, probs_a, probs_b, n_resamples=200, seed=12)
    assert (other.low, other.high) != (first.low, first.high)
    assert other.difference == first.difference


# --------------------------------------------------------------------------- score and AUC


def test_score_interval_is_the_mean_seed_score_and_brackets_it() -> None:
    rng = np.random.default_rng(8)
    onehot = _onehot(rng, 120)
    probs = _probs(rng, onehot, skill=0.6, seeds=3)
    mean, low, high = score_interval(onehot, probs, n_resamples=300)
    assert mean == pytest.approx(np.mean([_score(onehot, p) for p in probs]), rel=1e-12)
    assert low < mean < high
    assert score_interval(onehot, probs, n_resamples=300) == (mean, low, high)


def test_score_interval_of_one_seed_matches_the_enumerated_bootstrap() -> None:
    rng = np.random.default_rng(9)
    onehot = _onehot(rng, 3, every_class=False)
    probs = _probs(rng, onehot, skill=0.5)
    scores = [
        _score(onehot[list(p)], probs[0, list(p)]) for p in itertools.product(range(3), repeat=3)
    ]
    _, low, high = score_interval(onehot, probs, n_resamples=20000, level=1.0 - 5.0 / 27.0)
    assert low == pytest.approx(_exact_quantile(scores, 2.5 / 27), abs=1e-9)
    assert high == pytest.approx(_exact_quantile(scores, 24.5 / 27), abs=1e-9)


def test_weighted_auc_is_the_auc_of_the_resampled_patients() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(10)
    n = 30
    truth = rng.integers(0, 2, size=n).astype(bool)
    scores = np.round(rng.uniform(size=n), 1)  # ties
    picks = rng.integers(0, n, size=(50, n))
    counts = np.stack([np.bincount(p, minlength=n) for p in picks]).astype(np.float64)
    got = _weighted_auc(truth, scores, counts)
    for k, pick in enumerate(picks):
        if np.unique(truth[pick]).size < 2:
            assert math.isnan(got[k])
        else:
            assert got[k] == pytest.approx(roc_auc_score(truth[pick], scores[pick]), abs=1e-12)


def test_auc_intervals_of_a_perfect_predictor_and_of_a_single_class() -> None:
    rng = np.random.default_rng(11)
    onehot = _onehot(rng, 40)
    onehot[:, 2:4] = [1.0, 0.0]  # extravasation: nobody injured
    perfect = _normalise(0.1 + 0.5 * np.stack([onehot, onehot]))
    result = auc_intervals(onehot, perfect, n_resamples=200)
    assert set(result) == set(SCORE_COLUMNS)
    for name in ("bowel", "kidney", "liver", "spleen", "any_injury"):
        assert result[name] == pytest.approx((1.0, 1.0, 1.0)), name
    assert all(math.isnan(v) for v in result["extravasation"])


def test_auc_intervals_mean_over_seeds_and_skip_single_class_resamples() -> None:
    rng = np.random.default_rng(12)
    onehot = _onehot(rng, 100)
    probs = _probs(rng, onehot, skill=0.4, seeds=2)
    result = auc_intervals(onehot, probs, n_resamples=300)
    per_seed = [target_auc_arrays(onehot, p) for p in probs]
    for name in SCORE_COLUMNS:
        mean, low, high = result[name]
        assert mean == pytest.approx(np.mean([a[name] for a in per_seed]), rel=1e-12)
        assert low < mean < high, name

    # two injured patients of 100: many resamples miss both, yet the interval is finite
    rare = onehot.copy()
    rare[:, 0:2] = [1.0, 0.0]
    rare[:2, 0:2] = [0.0, 1.0]
    mean, low, high = auc_intervals(rare, probs, n_resamples=300)["bowel"]
    assert np.isfinite([mean, low, high]).all()


# --------------------------------------------------------------------------- floors


def test_floor_intervals_values_are_the_constant_floors() -> None:
    rng = np.random.default_rng(13)
    onehot = _onehot(rng, 150)
    floors = constant_floors(onehot)
    result = floor_intervals(onehot, n_resamples=100)
    assert set(result) == {"prevalence", "constant"}
    for name in ("prevalence", "constant"):
        value, low, high = result[name]
        assert value == floors[name]
        assert low < value < high, name
    assert floor_intervals(onehot, n_resamples=100) == result


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda o, a, b: (o, a, b[:1]), "probs_b"),
        (lambda o, a, b: (o[:-1], a, b), "patients"),
        (lambda o, a, b: (o, a[..., :12], b), "probs_a"),
        (lambda o, a, b: (o, a * 2.0, b), "sum to 1"),
        (lambda o, a, b: (o * 2.0, a, b), "one-hot"),
    ],
)
def test_bad_inputs_are_named(change, match: str) -> None:
    rng = np.random.default_rng(14)
    onehot = _onehot(rng, 20)
    probs_a = _probs(rng, onehot, skill=0.3, seeds=2)
    probs_b = _probs(rng, onehot, skill=0.3, seeds=2)
    with pytest.raises(UserError, match=match):
        paired_difference(*change(onehot, probs_a, probs_b), n_resamples=10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_resamples": 0}, "n_resamples"), ({"level": 1.0}, "level"), ({"power": 0.0}, "power")],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    rng = np.random.default_rng(15)
    onehot = _onehot(rng, 20)
    probs = _probs(rng, onehot, skill=0.3)
    with pytest.raises(UserError, match=match):
        paired_difference(onehot, probs, probs, **kwargs)
