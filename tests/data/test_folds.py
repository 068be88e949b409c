"""Patient folds: a partition, deterministic per seed, stratified, saved and reused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctvoco.data.folds import STRATIFY_COLUMNS, folds_path, load_or_make_folds, make_folds
from ctvoco.errors import DataError, UserError
from tests.data.conftest import random_labels

N_PATIENTS = 200


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    return random_labels(N_PATIENTS, seed=0)


@pytest.fixture(scope="module")
def series_counts(labels: pd.DataFrame) -> pd.Series:
    """Every third patient has two series."""
    counts = np.where(np.arange(len(labels)) % 3 == 0, 2, 1)
    return pd.Series(counts, index=labels["patient_id"].to_numpy())


def spread(labels: pd.DataFrame, folds: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Per column: max - min over folds of the number of positive patients."""
    per_fold = labels.merge(folds, on="patient_id").groupby("fold")[columns].sum()
    return per_fold.max() - per_fold.min()


def test_labels_have_rare_classes(labels: pd.DataFrame) -> None:
    positives = labels[list(STRATIFY_COLUMNS)].sum()
    assert positives.min() < 10  # the stratification test below is meaningful
    assert positives.min() > 0


@pytest.mark.parametrize("n_folds", [2, 5, 7])
def test_every_patient_in_exactly_one_fold(labels, series_counts, n_folds: int) -> None:
    folds = make_folds(labels, series_counts, n_folds=n_folds, seed=42)
    assert list(folds.columns) == ["patient_id", "fold"]
    assert folds["patient_id"].tolist() == sorted(labels["patient_id"])
    assert set(folds["fold"]) == set(range(n_folds))
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1


def test_deterministic_for_a_seed_and_different_for_another(labels, series_counts) -> None:
    first = make_folds(labels, series_counts, seed=42)
    again = make_folds(labels, series_counts, seed=42)
    other = make_folds(labels, series_counts, seed=43)
    pd.testing.assert_frame_equal(first, again)
    assert (first["fold"] != other["fold"]).any()


def test_input_order_does_not_change_the_assignment_seed(labels, series_counts) -> None:
    shuffled = labels.sample(frac=1.0, random_state=1)
    folds = make_folds(shuffled, series_counts, seed=42)
    assert folds["patient_id"].is_monotonic_increasing
    assert sorted(folds["patient_id"]) == sorted(labels["patient_id"])


@pytest.mark.parametrize("seed", [42, 0, 7])
def test_injury_columns_are_stratified(labels, series_counts, seed: int) -> None:
    folds = make_folds(labels, series_counts, n_folds=5, seed=seed)
    assert spread(labels, folds, list(STRATIFY_COLUMNS)).max() <= 2


def test_series_counts_are_stratified(labels, series_counts) -> None:
    with_counts = make_folds(labels, series_counts, seed=42)
    without = make_folds(labels, None, seed=42)
    table = labels.assign(two=(series_counts.reindex(labels["patient_id"]) == 2).to_numpy())
    assert spread(table, with_counts, ["two"])["two"] <= 1
    # Without the counts the two-series patients cluster (this data, this seed).
    assert spread(table, without, ["two"])["two"] > 2


def test_series_counts_missing_patients_default_to_one(labels, series_counts) -> None:
    partial = series_counts.iloc[: len(series_counts) // 2]
    folds = make_folds(labels, partial, seed=42)
    assert len(folds) == len(labels)


@pytest.mark.parametrize("n_folds", [1, 0, -3])
def test_too_few_folds_is_a_user_error(labels, n_folds: int) -> None:
    with pytest.raises(UserError, match=rf"^n_folds must be at least 2; got {n_folds}"):
        make_folds(labels, n_folds=n_folds)


def test_fewer_patients_than_folds(labels) -> None:
    with pytest.raises(DataError, match="3 labelled patients cannot make 5 folds"):
        make_folds(labels.iloc[:3], n_folds=5)


def test_folds_are_saved_and_reused(tmp_path, labels, series_counts) -> None:
    path = folds_path(tmp_path / "cache", 5, 42)
    assert path.name == "folds_5fold_seed42.csv"
    made = load_or_make_folds(tmp_path / "cache", labels, series_counts, n_folds=5, seed=42)
    assert path.exists()
    pd.testing.assert_frame_equal(pd.read_csv(path), made, check_dtype=False)
    # A saved (here: hand-edited) file is reused as is, not recomputed.
    edited = made.assign(fold=(made["fold"] + 1) % 5)
    path.write_text(edited.sample(frac=1.0, random_state=0).to_csv(index=False))
    reused = load_or_make_folds(tmp_path / "cache", labels, series_counts, n_folds=5, seed=42)
    pd.testing.assert_frame_equal(reused, edited, check_dtype=False)
    # Another seed or fold count is another file.
    load_or_make_folds(tmp_path / "cache", labels, series_counts, n_folds=4, seed=42)
    load_or_make_folds(tmp_path / "cache", labels, series_counts, n_folds=5, seed=1)
    names = sorted(p.name for p in (tmp_path / "cache").glob("folds_*.csv"))
    assert names == ["folds_4fold_seed42.csv", "folds_5fold_seed1.csv", "folds_5fold_seed42.csv"]


@pytest.mark.parametrize("change", ["drop", "add", "replace"])
def test_saved_folds_for_other_patients_are_refused(tmp_path, labels, change: str) -> None:
    load_or_make_folds(tmp_path, labels, n_folds=5, seed=42)
    if change == "drop":
        other = labels.iloc[1:]
    elif change == "add":
        other = pd.concat([labels, labels.iloc[:1].assign(patient_id=99999)], ignore_index=True)
    else:
        other = labels.assign(patient_id=labels["patient_id"].replace({1000: 99999}))
    with pytest.raises(UserError, match=r"folds_5fold_seed42\.csv was made for a different set"):
        load_or_make_folds(tmp_path, other, n_folds=5, seed=42)
