"""The submission: one row per patient, in ``sample_submission.csv``'s order, and its files.

Series-level probabilities are aggregated per patient (``max`` or ``mean``) and each
target's probabilities renormalised to sum to 1. A patient without a usable series gets
the training prevalence. The submission, ``series_predictions.csv`` and
``failed_series.csv`` are each written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctvoco.classify.spec import InferenceSpec
from ctvoco.data.rsna import parse_id
from ctvoco.errors import DataError, UserError
from ctvoco.inference.writable import write_advice
from ctvoco.io.atomic import atomic_write
from ctvoco.labels import PREDICTION_COLUMNS, TARGETS, aggregate_predictions, target_columns

log = logging.getLogger(__name__)


def patient_rows(
    series: pd.DataFrame,
    order: list[str],
    specs: Sequence[InferenceSpec],
    aggregate: str,
    known: set[str],
) -> tuple[pd.DataFrame, list[str]]:
    """One row per patient of ``order`` (in that order), groups normalised; and the patients
    predicted from the training prevalence.

    ``known`` are the patients of the input; the others (listed only in
    ``sample_submission.csv``) were warned about already."""
    per_patient = (
        aggregate_predictions(series.drop(columns="series_id"), aggregate) if len(series) else None
    )
    rows = (
        {}
        if per_patient is None
        else {str(r["patient_id"]): r for r in per_patient.to_dict("records")}
    )
    prevalence = training_prevalence(specs)
    fallback = [p for p in order if p not in rows]
    for patient in fallback:
        if patient in known:
            log.warning(
                "patient %s has no readable series: predicting the training prevalence", patient
            )
        rows[patient] = {
            "patient_id": patient,
            **dict(zip(PREDICTION_COLUMNS, prevalence, strict=True)),
        }
    frame = pd.DataFrame([rows[p] for p in order])
    frame["patient_id"] = frame["patient_id"].astype(int)
    for target in TARGETS:
        cols = target_columns(target)
        group = frame[cols].to_numpy(dtype=float)
        frame[cols] = group / group.sum(axis=1, keepdims=True)
    return frame[["patient_id", *PREDICTION_COLUMNS]], fallback


def training_prevalence(specs: Sequence[InferenceSpec]) -> np.ndarray:
    """The mean training prevalence of the models; uniform per target when none has one."""
    values = [s.prevalence for s in specs if s.prevalence]
    if not values:
        log.warning("checkpoints carry no training prevalence; the fallback is uniform per target")
        return np.concatenate(
            [np.full(len(target_columns(t)), 1 / len(target_columns(t))) for t in TARGETS]
        )
    return np.mean(np.asarray(values, dtype=float), axis=0)


def submission_order(input_dir: Path, patients: list[str]) -> list[str]:
    """``sample_submission.csv``'s order when one sits beside the input, else sorted ids.

    Every listed patient keeps its row, also one the input has no images of (it is predicted
    from the training prevalence, with a warning); patients of the input that the file does
    not list follow, in the input's order.
    """
    for candidate in (
        input_dir / "sample_submission.csv",
        input_dir.parent / "sample_submission.csv",
    ):
        if candidate.is_file():
            listed = list(dict.fromkeys(_listed_patients(candidate)))
            known, seen = set(patients), set(listed)
            for patient in (p for p in listed if p not in known):
                log.warning(
                    "patient %s is listed in %s but %s has no image folder for it: predicting "
                    "the training prevalence",
                    patient,
                    candidate,
                    input_dir,
                )
            return listed + [p for p in patients if p not in seen]
    return sorted(patients, key=int)


def _listed_patients(path: Path) -> list[str]:
    """The patient ids of a ``sample_submission.csv``, as canonical integer strings."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    if "patient_id" not in frame.columns:
        raise DataError(f"{path}: no patient_id column")
    # row numbers as a spreadsheet shows them: the header is row 1
    return [
        str(parse_id(value, "patient_id", f"{path} row {row}"))
        for row, value in enumerate(frame["patient_id"], start=2)
    ]


def write_outputs(
    out: Path, submission: pd.DataFrame, series: pd.DataFrame, failed: list[dict[str, Any]]
) -> None:
    """The submission, ``series_predictions.csv`` and ``failed_series.csv``, each atomically.

    ``failed_series.csv`` lists this run's unusable series; a run without any removes the
    file an earlier run may have left.

    Raises:
        UserError: A file cannot be written (e.g. the disk is full); no partial file is
            left under its name.
    """
    failed_csv = out.with_name("failed_series.csv")
    tables = [(out, submission), (out.with_name("series_predictions.csv"), series)]
    if failed:
        tables.append((failed_csv, pd.DataFrame(failed)))
    for path, table in tables:
        try:
            with atomic_write(path, "w") as handle:
                table.to_csv(handle, index=False)
        except OSError as exc:
            raise UserError(
                f"cannot write {path} ({exc.strerror or exc}); "
                f"{write_advice(exc, 'output', 'a file')}"
            ) from exc
    if not failed:
        failed_csv.unlink(missing_ok=True)
