"""Tests of the RSNA 2023 Abdominal Trauma Detection metric (:mod:`ctvoco.metrics.rsna`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from ctvoco.labels import (
    CLASS_WEIGHTS,
    LABEL_COLUMNS,
    PREDICTION_COLUMNS,
    SCORE_COLUMNS,
    TARGET_CLASSES,
    TARGETS,
    aggregate_predictions,
    classes_from_labels,
    labels_from_classes,
    prevalence_predictions,
    target_columns,
)
from ctvoco.metrics import EPS, rsna_score, target_auc

N_CLASSES = [len(TARGET_CLASSES[t]) for t in TARGETS]


# --------------------------------------------------------------------------- helpers


def _random_classes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random integer classes, shape (n, 5), with every class of every target present."""
    classes = np.stack([rng.integers(0, k, size=n) for k in N_CLASSES], axis=1)
    for j, k in enumerate(N_CLASSES):
        classes[:k, j] = np.arange(k)
    return classes


def _random_predictions(rng: np.random.Generator, ids: list[int]) -> pd.DataFrame:
    """Random, unnormalised, strictly positive (soft) probabilities for ``ids``, one row each."""
    values = rng.uniform(0.01, 3.0, size=(len(ids), len(PREDICTION_COLUMNS)))
    frame = pd.DataFrame(values, columns=list(PREDICTION_COLUMNS))
    frame.insert(0, "patient_id", ids)
    return frame


def _kaggle_reference(labels: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    """Independent reference, the Kaggle way: normalise groups, then sklearn ``log_loss``.

    ``predictions`` must hold one row per patient and be soft (no probability near 0 or 1):
    scikit-learn's clipping constant changed after 2023, see
    :func:`test_hard_predictions_are_clipped_at_1e_15`.
    """
    sub = predictions.set_index("patient_id").loc[labels["patient_id"]].reset_index(drop=True)
    sol = labels.reset_index(drop=True)
    out: dict[str, float] = {}
    for target in TARGETS:
        cols = target_columns(target)
        sub[cols] = sub[cols].div(sub[cols].sum(axis=1), axis=0)
        weights = np.select(
            [sol[c] == 1 for c in cols], list(CLASS_WEIGHTS[target]), default=np.nan
        )
        out[target] = log_loss(sol[cols].to_numpy(), sub[cols].to_numpy(), sample_weight=weights)
    healthy = [f"{t}_healthy" for t in TARGETS]
    any_label = (1 - sol[healthy]).max(axis=1).to_numpy()
    any_pred = (1 - sub[healthy]).max(axis=1).to_numpy()
    any_weight = np.where(any_label == 1, 6.0, 1.0)
    out["any_injury"] = log_loss(any_label, any_pred, sample_weight=any_weight, labels=[0, 1])
    out["score"] = float(np.mean([out[k] for k in SCORE_COLUMNS]))
    return out


def _prediction_row(patient_id: int, groups: list[tuple[float, ...]]) -> dict[str, float]:
    row: dict[str, float] = {"patient_id": patient_id}
    for target, probs in zip(TARGETS, groups, strict=True):
        row.update(dict(zip(target_columns(target), probs, strict=True)))
    return row


@pytest.fixture
def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two patients: all healthy (id 10) and injured (id 20: bowel, kidney low, spleen high)."""
    labels = labels_from_classes([10, 20], np.array([[0, 0, 0, 0, 0], [1, 0, 1, 0, 2]]))
    preds = pd.DataFrame(
        [
            _prediction_row(
                10, [(0.9, 0.1), (0.8, 0.2), (0.7, 0.2, 0.1), (0.6, 0.3, 0.1), (0.5, 0.25, 0.25)]
            ),
            _prediction_row(
                20, [(0.4, 0.6), (0.9, 0.1), (0.2, 0.5, 0.3), (0.8, 0.1, 0.1), (0.1, 0.3, 0.6)]
            ),
        ]
    )
    return labels, preds


# --------------------------------------------------------------------------- values


def test_hand_computed(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    labels, preds = small
    log = math.log
    expected = {
        # patient 10 healthy (w 1, p .9), patient 20 injured (w 2, p .6)
        "bowel": -(1 * log(0.9) + 2 * log(0.6)) / 3,
        # both healthy (w 1): p .8 and .9
        "extravasation": -(log(0.8) + log(0.9)) / 2,
        # healthy (w 1, p .7), low (w 2, p .5)
        "kidney": -(log(0.7) + 2 * log(0.5)) / 3,
        # both healthy: p .6 and .8
        "liver": -(log(0.6) + log(0.8)) / 2,
        # healthy (w 1, p .5), high (w 4, p .6)
        "spleen": -(log(0.5) + 4 * log(0.6)) / 5,
        # patient 10: label 0 (w 1), p_any = max(.1, .2, .3, .4, .5) = .5 -> log(1 - .5)
        # patient 20: label 1 (w 6), p_any = max(.6, .1, .8, .2, .9) = .9 -> log(.9)
        "any_injury": -(log(0.5) + 6 * log(0.9)) / 7,
    }
    expected["score"] = sum(expected.values()) / 6
    result = rsna_score(labels, preds)
    assert set(result) == {*SCORE_COLUMNS, "score"}
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize(("seed", "n"), [(0, 7), (1, 50), (2, 200)])
def test_matches_sklearn_reference_on_soft_predictions(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [int(i) for i in rng.permutation(10_000)[:n]]
    labels = labels_from_classes(ids, _random_classes(rng, n))
    preds = _random_predictions(rng, ids).sample(frac=1.0, random_state=seed)
    result = rsna_score(labels, preds)
    expected = _kaggle_reference(labels, preds)
    for name in expected:
        assert result[name] == pytest.approx(expected[name], abs=1e-9, rel=1e-12), name


def test_reference_with_an_absent_class() -> None:
    # nobody has a high-grade kidney injury: the column is all zero in the labels
    rng = np.random.default_rng(3)
    classes = _random_classes(rng, 30)
    classes[:, 2] = np.minimum(classes[:, 2], 1)
    labels = labels_from_classes(list(range(30)), classes)
    preds = _random_predictions(rng, list(range(30)))
    result = rsna_score(labels, preds)
    expected = _kaggle_reference(labels, preds)
    for name in expected:
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name


def test_hard_predictions_are_clipped_at_1e_15() -> None:
    # The competition's scikit-learn clipped to [1e-15, 1 - 1e-15]: a confident wrong class
    # costs -log(1e-15), a confident right one -log(1 - 1e-15).
    assert EPS == 1e-15
    labels = labels_from_classes([1, 2], np.array([[0, 0, 0, 0, 0], [1, 0, 2, 0, 0]]))
    healthy = [(1.0, 0.0), (1.0, 0.0), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0)]
    liver_high = [*healthy[:3], (0.0, 0.0, 1.0), healthy[4]]
    # patient 1 (healthy): wrong only on the liver; patient 2: wrong on bowel and kidney
    preds = pd.DataFrame([_prediction_row(1, liver_high), _prediction_row(2, healthy)])
    wrong = -math.log(1e-15)
    right = -math.log1p(-1e-15)
    expected = {
        "bowel": (1 * right + 2 * wrong) / 3,  # healthy (w 1) right, injured (w 2) wrong
        "extravasation": right,
        "kidney": (1 * right + 4 * wrong) / 5,  # healthy (w 1) right, high (w 4) wrong
        "liver": (wrong + right) / 2,
        "spleen": right,
        # patient 1: p_any = 1 - p_liver_healthy = 1 but healthy; patient 2: p_any = 0, injured
        "any_injury": (1 * wrong + 6 * wrong) / 7,
    }
    expected["score"] = sum(expected.values()) / 6
    result = rsna_score(labels, preds)
    assert result == pytest.approx(expected, abs=1e-12)
    assert result["any_injury"] == pytest.approx(34.538776394910684, abs=1e-12)
    # machine-epsilon clipping (newer scikit-learn) would give -log(2.2e-16) = 36.04
    assert result["any_injury"] < 35.0


def test_perfect_predictions_score_zero() -> None:
    rng = np.random.default_rng(4)
    labels = labels_from_classes(list(range(40)), _random_classes(rng, 40))
    preds = labels[["patient_id", *PREDICTION_COLUMNS]].astype(float)
    result = rsna_score(labels, preds)
    for name, value in result.items():
        assert value == pytest.approx(0.0, abs=1e-12), name


def test_uniform_predictions() -> None:
    # 3 healthy patients and 1 with liver low + extravasation
    labels = labels_from_classes([1, 2, 3, 4], np.array([[0, 0, 0, 0, 0]] * 3 + [[0, 1, 0, 1, 0]]))
    preds = pd.DataFrame(np.ones((4, 13)), columns=list(PREDICTION_COLUMNS))
    preds.insert(0, "patient_id", [1, 2, 3, 4])
    result = rsna_score(labels, preds)
    # a uniform group has p = 1/K for every class, whatever the weights
    for target in TARGETS:
        assert result[target] == pytest.approx(math.log(len(TARGET_CLASSES[target])))
    # p_any = max(1 - 1/2, 1 - 1/3) = 2/3: healthy (w 1) pay -log(1/3), injured (w 6) -log(2/3)
    any_loss = -(3 * math.log(1 / 3) + 6 * math.log(2 / 3)) / 9
    assert result["any_injury"] == pytest.approx(any_loss)
    expected_score = (2 * math.log(2) + 3 * math.log(3) + any_loss) / 6
    assert result["score"] == pytest.approx(expected_score)


def test_several_series_per_patient(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    labels, preds = small
    # patient 20 gets a second series that is confident it is all healthy
    second = _prediction_row(
        20, [(1.0, 0.0), (1.0, 0.0), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0)]
    )
    series = pd.concat([preds, pd.DataFrame([second])], ignore_index=True)
    series["series_id"] = [100, 200, 201]

    p20 = preds.iloc[1][list(PREDICTION_COLUMNS)].to_numpy(dtype=float)
    p_second = np.array([second[c] for c in PREDICTION_COLUMNS])
    for how, p20_agg in [("max", np.maximum(p20, p_second)), ("mean", (p20 + p_second) / 2)]:
        agg = aggregate_predictions(series, how=how)
        assert list(agg.columns) == ["patient_id", *PREDICTION_COLUMNS]
        assert agg["patient_id"].tolist() == [10, 20]
        np.testing.assert_allclose(agg.iloc[1, 1:].to_numpy(dtype=float), p20_agg)
        single = preds.copy()
        single.loc[1, list(PREDICTION_COLUMNS)] = p20_agg
        assert rsna_score(labels, series, aggregate=how) == pytest.approx(
            _kaggle_reference(labels, single)
        )

    by_max = rsna_score(labels, series, aggregate="max")
    by_mean = rsna_score(labels, series, aggregate="mean")
    assert by_max == rsna_score(labels, series)  # max is the default
    # mean halves the injury probabilities of patient 20; max keeps them
    assert by_mean["bowel"] > by_max["bowel"]
    assert by_mean["score"] != pytest.approx(by_max["score"])
    # bowel, patient 20 with max: (max(.4, 1), max(.6, 0)) = (1, .6) -> normalised (1/1.6, .6/1.6)
    assert by_max["bowel"] == pytest.approx(-(math.log(0.9) + 2 * math.log(0.6 / 1.6)) / 3)


@pytest.mark.parametrize("target", TARGETS)
def test_scaling_a_group_changes_nothing(target: str) -> None:
    rng = np.random.default_rng(5)
    labels = labels_from_classes(list(range(25)), _random_classes(rng, 25))
    preds = _random_predictions(rng, list(range(25)))
    scaled = preds.copy()
    scaled[target_columns(target)] *= 37.5
    assert rsna_score(labels, scaled) == pytest.approx(rsna_score(labels, preds), abs=1e-12)
    assert target_auc(labels, scaled) == pytest.approx(target_auc(labels, preds))


def test_extra_columns_and_any_injury_in_labels_are_ignored(
    small: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    labels, preds = small
    reference = rsna_score(labels, preds)
    noisy = labels.assign(any_injury=[1, 0], note=["a", "b"])
    assert rsna_score(noisy, preds.assign(series_id=[5, 6])) == reference
    assert rsna_score(labels.drop(columns="any_injury"), preds) == reference


def test_inputs_are_not_modified(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    labels, preds = small
    preds = preds.assign(bowel_healthy=preds["bowel_healthy"] * 3)
    labels_copy, preds_copy = labels.copy(), preds.copy()
    rsna_score(labels, preds)
    target_auc(labels, preds)
    pd.testing.assert_frame_equal(labels, labels_copy)
    pd.testing.assert_frame_equal(preds, preds_copy)


# --------------------------------------------------------------------------- errors


def _set(column: str, row: int, value: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def apply(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame[column] = frame[column].astype(float)
        frame.loc[row, column] = value
        return frame

    return apply


def _zero_group(target: str, row: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def apply(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[row, target_columns(target)] = 0.0
        return frame

    return apply


def _identity(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


# (name, change to labels, change to predictions, aggregate, message pattern)
ERROR_CASES: list[
    tuple[
        str,
        Callable[[pd.DataFrame], pd.DataFrame],
        Callable[[pd.DataFrame], pd.DataFrame],
        str,
        str,
    ]
] = [
    (
        "label column missing",
        lambda f: f.drop(columns=["liver_low", "spleen_high"]),
        _identity,
        "max",
        r"labels is missing 2 column\(s\): liver_low, spleen_high",
    ),
    (
        "prediction column missing",
        _identity,
        lambda f: f.drop(columns="kidney_high"),
        "max",
        r"predictions is missing 1 column\(s\): kidney_high",
    ),
    (
        "patient_id missing",
        _identity,
        lambda f: f.drop(columns="patient_id"),
        "max",
        r"predictions is missing .*patient_id",
    ),
    (
        "NaN prediction",
        _identity,
        _set("kidney_low", 1, np.nan),
        "max",
        r"NaN in column 'kidney_low' .*patient\(s\) 20",
    ),
    (
        "infinite prediction",
        _identity,
        _set("liver_high", 0, np.inf),
        "max",
        r"infinite values in column 'liver_high' .*patient\(s\) 10",
    ),
    (
        "negative prediction",
        _identity,
        _set("bowel_injury", 0, -0.1),
        "mean",
        r"negative probabilities in column 'bowel_injury' .*patient\(s\) 10",
    ),
    (
        "non-numeric prediction",
        _identity,
        lambda f: f.assign(spleen_low=["x", "y"]),
        "max",
        r"predictions column 'spleen_low' is not numeric",
    ),
    (
        "group sums to zero",
        _identity,
        _zero_group("liver", 1),
        "max",
        r"group 'liver' sum to zero for 1 patient\(s\): 20",
    ),
    (
        "label not one-hot (two ones)",
        _set("bowel_injury", 0, 1.0),
        _identity,
        "max",
        r"not one-hot in group 'bowel' .* 1 patient\(s\): 10",
    ),
    (
        "label not one-hot (fraction)",
        lambda f: _set("spleen_low", 1, 0.5)(_set("spleen_high", 1, 0.5)(f)),
        _identity,
        "max",
        r"not one-hot in group 'spleen' .*: 20",
    ),
    (
        "label NaN",
        _set("kidney_healthy", 0, np.nan),
        _identity,
        "max",
        r"not one-hot in group 'kidney' .*: 10",
    ),
    (
        "duplicated labelled patient",
        lambda f: pd.concat([f, f.iloc[[1]]], ignore_index=True),
        _identity,
        "max",
        r"labels have 2 rows with a duplicated patient_id: 20",
    ),
    (
        "unknown patient",
        _identity,
        lambda f: pd.concat([f, f.iloc[[0]].assign(patient_id=999)], ignore_index=True),
        "max",
        r"predictions for 1 unknown patients \(not in labels\): 999$",
    ),
    (
        "no patient matches",
        _identity,
        lambda f: f.assign(patient_id=f["patient_id"].astype(str)),
        "max",
        r"unknown patients .*: 10, 20 .*same type",
    ),
    (
        "labelled patient without prediction",
        _identity,
        lambda f: f.iloc[[1]],
        "max",
        r"no prediction for 1 of 2 labelled patients: 10",
    ),
    (
        "empty predictions",
        _identity,
        lambda f: f.iloc[[]],
        "max",
        r"predictions has no rows",
    ),
    (
        "unknown aggregate",
        _identity,
        _identity,
        "median",
        r"unknown aggregate 'median'; expected one of max, mean",
    ),
]


@pytest.mark.parametrize(
    ("change_labels", "change_predictions", "aggregate", "match"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors(
    small: tuple[pd.DataFrame, pd.DataFrame],
    change_labels: Callable[[pd.DataFrame], pd.DataFrame],
    change_predictions: Callable[[pd.DataFrame], pd.DataFrame],
    aggregate: str,
    match: str,
) -> None:
    labels, preds = small
    labels, preds = change_labels(labels), change_predictions(preds)
    with pytest.raises(ValueError, match=match):
        rsna_score(labels, preds, aggregate=aggregate)
    with pytest.raises(ValueError, match=match):
        target_auc(labels, preds, aggregate=aggregate)


def test_many_offending_patients_are_truncated() -> None:
    ids = list(range(100, 112))
    labels = labels_from_classes(ids, np.zeros((12, 5), dtype=int))
    preds = prevalence_predictions(labels, [*ids[:2], *range(900, 908)])
    with pytest.raises(ValueError, match=r"8 unknown .*: 900, 901, 902, 903, 904 \(and 3 more\)"):
        rsna_score(labels, preds)


def test_not_a_dataframe(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    labels, preds = small
    with pytest.raises(TypeError, match="predictions must be a pandas DataFrame"):
        rsna_score(labels, preds.to_numpy())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- AUC


def test_target_auc_perfect_separation_and_single_class() -> None:
    # extravasation: nobody injured -> NaN
    classes = np.array(
        [[0, 0, 0, 0, 0], [1, 0, 1, 2, 0], [0, 0, 2, 1, 1], [1, 0, 0, 0, 2], [0, 0, 0, 0, 0]]
    )
    ids = [5, 4, 3, 2, 1]
    labels = labels_from_classes(ids, classes)
    # probabilities from the labels, blurred so that they separate but are not one-hot
    preds = labels[["patient_id", *PREDICTION_COLUMNS]].astype(float)
    preds[list(PREDICTION_COLUMNS)] = 0.1 + 0.5 * preds[list(PREDICTION_COLUMNS)]
    result = target_auc(labels, preds)
    assert set(result) == set(SCORE_COLUMNS)
    assert math.isnan(result["extravasation"])
    for name in ("bowel", "kidney", "liver", "spleen", "any_injury"):
        assert result[name] == pytest.approx(1.0), name

    # inverted predictions give 0
    inverted = preds.copy()
    for target in TARGETS:
        cols = target_columns(target)
        inverted[cols] = inverted[cols].to_numpy()[:, ::-1]
    assert target_auc(labels, inverted)["bowel"] == pytest.approx(0.0)


def test_target_auc_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    labels = labels_from_classes(list(range(60)), _random_classes(rng, 60))
    preds = _random_predictions(rng, list(range(60)))
    result = target_auc(labels, preds)
    kidney = preds[target_columns("kidney")]
    p_healthy = kidney["kidney_healthy"] / kidney.sum(axis=1)
    assert result["kidney"] == pytest.approx(
        roc_auc_score(1 - labels["kidney_healthy"], 1 - p_healthy)
    )
    bowel = preds["bowel_injury"] / (preds["bowel_injury"] + preds["bowel_healthy"])
    assert result["bowel"] == pytest.approx(roc_auc_score(labels["bowel_injury"], bowel))


# --------------------------------------------------------------------------- baseline


# RSNA-like class counts among 1000 patients, per target, in class order
RSNA_LIKE_COUNTS = {
    "bowel": (980, 20),
    "extravasation": (936, 64),
    "kidney": (943, 36, 21),
    "liver": (878, 102, 20),
    "spleen": (881, 63, 56),
}


def _rsna_like_labels() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    columns = []
    for target in TARGETS:
        counts = RSNA_LIKE_COUNTS[target]
        columns.append(rng.permutation(np.repeat(np.arange(len(counts)), counts)))
    return labels_from_classes(list(range(1000)), np.stack(columns, axis=1))


def test_prevalence_baseline() -> None:
    labels = _rsna_like_labels()
    n = len(labels)
    preds = prevalence_predictions(labels, labels["patient_id"])
    assert len(preds) == n
    assert list(preds.columns) == ["patient_id", *PREDICTION_COLUMNS]

    expected: dict[str, float] = {}
    for target, counts in RSNA_LIKE_COUNTS.items():
        weights = CLASS_WEIGHTS[target]
        # every patient predicts prevalence count/n for its true class
        numerator = sum(c * w * math.log(c / n) for c, w in zip(counts, weights, strict=True))
        expected[target] = -numerator / sum(c * w for c, w in zip(counts, weights, strict=True))
    p_any = max(1 - counts[0] / n for counts in RSNA_LIKE_COUNTS.values())
    n_injured = int((labels["any_injury"] == 1).sum())
    n_healthy = n - n_injured
    expected["any_injury"] = -(
        n_healthy * math.log(1 - p_any) + 6 * n_injured * math.log(p_any)
    ) / (n_healthy + 6 * n_injured)
    expected["score"] = sum(expected.values()) / 6

    result = rsna_score(labels, preds)
    assert result == pytest.approx(expected, abs=1e-12)
    assert result["score"] > 0.4


def test_prevalence_predictions_for_other_patients() -> None:
    labels = labels_from_classes([1, 2, 3, 4], np.array([[0, 0, 0, 0, 0]] * 3 + [[1, 1, 2, 1, 0]]))
    preds = prevalence_predictions(labels, np.array([9, 8]))
    assert preds["patient_id"].tolist() == [9, 8]
    row = preds.iloc[0]
    assert row["bowel_healthy"] == pytest.approx(0.75)
    assert row["kidney_high"] == pytest.approx(0.25)
    assert row["kidney_low"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="patient_ids is empty"):
        prevalence_predictions(labels, [])


# --------------------------------------------------------------------------- class helpers


def test_labels_classes_roundtrip() -> None:
    rng = np.random.default_rng(8)
    classes = _random_classes(rng, 20)
    labels = labels_from_classes(list(range(20)), classes)
    assert list(labels.columns) == ["patient_id", *LABEL_COLUMNS]
    np.testing.assert_array_equal(classes_from_labels(labels), classes)
    np.testing.assert_array_equal(labels["any_injury"], (classes > 0).any(axis=1).astype(int))
    # row order of the frame is kept
    shuffled = labels.iloc[::-1]
    np.testing.assert_array_equal(classes_from_labels(shuffled), classes[::-1])


def test_labels_from_classes_one_row() -> None:
    labels = labels_from_classes(["p"], np.array([[1, 0, 2, 0, 1]]))
    row = labels.iloc[0]
    assert row["patient_id"] == "p"
    expected_ones = {"bowel_injury", "extravasation_healthy", "kidney_high", "liver_healthy"}
    expected_ones |= {"spleen_low", "any_injury"}
    for column in LABEL_COLUMNS:
        assert row[column] == int(column in expected_ones), column


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        (np.array([[0, 2, 0, 0, 0]]), r"target 'extravasation' must be in \[0, 1\] .* p"),
        (np.array([[0, 0, 3, 0, 0]]), r"target 'kidney' must be in \[0, 2\]"),
        (np.array([[0, 0, 0, -1, 0]]), r"target 'liver'"),
        (np.array([[0, 0, 0, 0]]), r"shape \(1, 5\)"),
        (np.array([[0.5, 0, 0, 0, 0]]), r"must be integers"),
    ],
)
def test_labels_from_classes_errors(classes: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        labels_from_classes(["p"], classes)


def test_classes_from_labels_rejects_non_one_hot() -> None:
    labels = labels_from_classes([1, 2], np.zeros((2, 5), dtype=int))
    labels.loc[1, "liver_healthy"] = 0
    with pytest.raises(ValueError, match=r"not one-hot in group 'liver' .*: 2"):
        classes_from_labels(labels)
