"""Patient-level cross-validation folds, multilabel-stratified and saved next to the cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from ctvoco.errors import ArgumentError, DataError, UserError
from ctvoco.io.atomic import write_text_atomic

STRATIFY_COLUMNS = (
    "bowel_injury",
    "extravasation_injury",
    "kidney_low",
    "kidney_high",
    "liver_low",
    "liver_high",
    "spleen_low",
    "spleen_high",
)


def check_n_folds(n_folds: int) -> int:
    """``n_folds``, known to be a number of folds a split can have (2 or more).

    Raises:
        ArgumentError: Naming ``n_folds`` and the value.
    """
    if n_folds < 2:
        raise ArgumentError("n_folds", f" must be at least 2; got {n_folds}")
    return n_folds


def make_folds(
    labels: pd.DataFrame,
    series_counts: pd.Series | None = None,
    n_folds: int = 5,
    seed: int = 42,
) -> pd.DataFrame:
    """Assign every patient to one of ``n_folds`` folds (docs/algorithms.md §3.4).

    Stratified on the injury columns and on the number of series per patient with
    ``MultilabelStratifiedKFold(shuffle=True, random_state=seed)``.

    Args:
        labels: Validated ``train.csv`` frame (see :func:`ctvoco.data.rsna.read_rsna_labels`).
        series_counts: Series per patient, indexed by ``patient_id`` (default 1 each).
        n_folds: Number of folds (>= 2).
        seed: Shuffling seed.

    Returns:
        ``patient_id``, ``fold`` sorted by patient.
    """
    check_n_folds(n_folds)
    if len(labels) < n_folds:
        raise DataError(f"{len(labels)} labelled patients cannot make {n_folds} folds")
    patients = labels["patient_id"].to_numpy()
    counts = (
        np.ones(len(patients), dtype=int)
        if series_counts is None
        else series_counts.reindex(patients).fillna(1).clip(1, 2).to_numpy(dtype=int)
    )
    y = np.column_stack(
        [
            labels[list(STRATIFY_COLUMNS)].to_numpy(),
            (counts == 1).astype(int),
            (counts == 2).astype(int),
        ]
    )
    folds = np.empty(len(patients), dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, val_idx) in enumerate(splitter.split(np.zeros(len(patients)), y)):
        folds[val_idx] = fold
    return pd.DataFrame({"patient_id": patients, "fold": folds}).sort_values(
        "patient_id", ignore_index=True
    )


def folds_path(directory: str | os.PathLike[str], n_folds: int, seed: int) -> Path:
    """``<directory>/folds_<n>fold_seed<seed>.csv``."""
    return Path(directory) / f"folds_{n_folds}fold_seed{seed}.csv"


def load_or_make_folds(
    directory: str | os.PathLike[str],
    labels: pd.DataFrame,
    series_counts: pd.Series | None = None,
    n_folds: int = 5,
    seed: int = 42,
) -> pd.DataFrame:
    """The saved folds for these patients, made and saved on first use.

    Raises:
        UserError: A saved fold file covers a different set of patients.
    """
    path = folds_path(directory, n_folds, seed)
    if path.exists():
        folds = pd.read_csv(path)
        if set(folds["patient_id"]) != set(labels["patient_id"]):
            raise UserError(
                f"{path} was made for a different set of patients than the current labels; "
                "delete it to make new folds"
            )
        return folds.sort_values("patient_id", ignore_index=True)
    folds = make_folds(labels, series_counts, n_folds, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, folds.to_csv(index=False))
    return folds
