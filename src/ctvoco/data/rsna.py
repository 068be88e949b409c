"""The RSNA 2023 Abdominal Trauma Detection layout: series discovery and label files.

::

    <root>/train.csv                        one row per patient (labels)
    <root>/train_series_meta.csv            patient_id, series_id, aortic_hu, incomplete_organ
    <root>/train_images/<patient_id>/<series_id>/<instance>.dcm
    <root>/test_images/<patient_id>/<series_id>/<instance>.dcm

Patient and series ids are integers; they are validated before they become paths or keys.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ctvoco.cache.builder import SeriesSource
from ctvoco.errors import DataError, UserError
from ctvoco.schema import LABEL_COLUMNS, PREDICTION_COLUMNS, TARGETS, target_columns

log = logging.getLogger(__name__)

RSNA_URL = "https://www.kaggle.com/competitions/rsna-2023-abdominal-trauma-detection/data"
SPLITS = ("train", "test")


def is_id(text: str) -> bool:
    """True for a non-empty string of ASCII digits (``str.isdigit`` also accepts ``²``)."""
    return text.isascii() and text.isdigit()


def parse_id(value: object, what: str, where: str) -> int:
    """An id as a non-negative integer, or a :class:`DataError` naming where it came from.

    Digits only, optionally followed by ``.0`` (how pandas writes an integer column that
    once held a missing value); signs, fractions, exponents and non-ASCII digits are refused.
    """
    text = str(value).strip()
    digits = text.removesuffix(".0")
    if not is_id(digits):
        raise DataError(f"{where}: {what} must be a non-negative integer; got {value!r}")
    return int(digits)


def images_dir(root: str | os.PathLike[str], split: str = "train") -> Path:
    """``<root>/<split>_images``, or a :class:`UserError` saying how to get the data."""
    if split not in SPLITS:
        raise UserError(f"data.split must be one of {', '.join(SPLITS)}; got {split!r}")
    folder = Path(root) / f"{split}_images"
    if not folder.is_dir():
        raise UserError(
            f"RSNA 2023 data not found: expected {split}_images/<patient>/<series>/*.dcm under "
            f"{Path(root).resolve()} (data.root); download it from {RSNA_URL} (kaggle "
            "competitions download -c rsna-2023-abdominal-trauma-detection), unzip, and set "
            "data.root=/path/to/rsna-2023-abdominal-trauma-detection"
        )
    return folder


def rsna_series(root: str | os.PathLike[str], split: str = "train") -> list[SeriesSource]:
    """Every series folder of the split, keyed ``<patient_id>_<series_id>``.

    Non-integer folder names are reported and skipped; hidden entries are ignored. A patient
    folder that cannot be listed (no permission, I/O error) becomes one source keyed
    ``<patient_id>`` that fails with the reason, so its series are recorded as failed and
    every other patient is still processed.

    Raises:
        UserError: The images folder itself cannot be listed.
    """
    folder = images_dir(root, split)
    sources = []
    skipped = []
    try:
        patients = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise UserError(
            f"{folder}: cannot list the images folder ({exc.strerror or exc}); make it "
            "readable or set data.root= to another copy of the data"
        ) from exc
    for patient_dir in patients:
        if not patient_dir.is_dir() or not is_id(patient_dir.name):
            skipped.append(patient_dir.name)
            continue
        try:
            entries = sorted(p for p in patient_dir.iterdir() if not p.name.startswith("."))
        except OSError as exc:
            sources.append(_unreadable_patient(patient_dir, exc))
            continue
        for series_dir in entries:
            if not series_dir.is_dir() or not is_id(series_dir.name):
                skipped.append(f"{patient_dir.name}/{series_dir.name}")
                continue
            pid, sid = int(patient_dir.name), int(series_dir.name)
            sources.append(SeriesSource(f"{pid}_{sid}", str(series_dir), str(pid), str(sid)))
    if skipped:
        log.warning(
            "%s: skipped %d entries whose names are not integer ids: %s",
            folder,
            len(skipped),
            ", ".join(skipped[:5]),
        )
    return sources


def _unreadable_patient(patient_dir: Path, exc: OSError) -> SeriesSource:
    """A source standing for the series of a patient folder that cannot be listed."""
    pid = str(int(patient_dir.name))
    error = f"{patient_dir}: cannot list the patient folder ({exc.strerror or exc})"
    log.warning("%s; its series are recorded as failed", error)
    return SeriesSource(pid, str(patient_dir), pid, "", error=error)


def read_rsna_labels(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate ``train.csv``.

    Checks: required columns present, integer and unique ``patient_id``, 0/1 values, each
    target one-hot, ``any_injury`` (when present) consistent with the targets.

    Returns:
        ``patient_id`` (int64) + the 13 one-hot columns + ``any_injury``, sorted by patient.

    Raises:
        DataError: Naming the file, the CSV line and the patient.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: label file not found")
    frame = _read_csv(path)
    missing = [c for c in ("patient_id", *PREDICTION_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise DataError(f"{path}: no patients (the file has a header but no rows)")
    line = dict(enumerate(frame.index + 2))  # header is line 1; blank lines keep their numbers
    frame = frame.reset_index(drop=True)
    frame["patient_id"] = [
        parse_id(v, "patient_id", f"{path}:{line[i]}") for i, v in enumerate(frame["patient_id"])
    ]
    duplicated = frame["patient_id"].duplicated(keep=False)
    if duplicated.any():
        ids = sorted(set(frame.loc[duplicated, "patient_id"]))[:5]
        raise DataError(f"{path}: duplicate patient_id(s) {', '.join(map(str, ids))}")
    for column in PREDICTION_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}:{line[i]}: patient {frame['patient_id'].iloc[i]}: {column} must be 0 or 1; "
                f"got {frame[column].astype(str).iloc[i]!r}"
            )
        frame[column] = values.astype(np.int64)
    for target in TARGETS:
        sums = frame[target_columns(target)].sum(axis=1)
        if (sums != 1).any():
            i = int(np.flatnonzero((sums != 1).to_numpy())[0])
            raise DataError(
                f"{path}:{line[i]}: patient {frame['patient_id'].iloc[i]}: the {target} columns "
                f"({', '.join(target_columns(target))}) must be one-hot; they sum to {int(sums.iloc[i])}"
            )
    derived = 1 - frame[[f"{t}_healthy" for t in TARGETS]].min(axis=1)
    if "any_injury" in frame.columns:
        inconsistent = pd.to_numeric(frame["any_injury"], errors="coerce") != derived
        if inconsistent.any():
            i = int(np.flatnonzero(inconsistent.to_numpy())[0])
            raise DataError(
                f"{path}:{line[i]}: patient {frame['patient_id'].iloc[i]}: any_injury="
                f"{frame['any_injury'].astype(str).iloc[i]} contradicts the target columns"
            )
    frame["any_injury"] = derived.astype(np.int64)
    return frame[["patient_id", *LABEL_COLUMNS]].sort_values("patient_id").reset_index(drop=True)


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV with rows indexed by their position in the file (blank lines counted)."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(
            path, skip_blank_lines=False, dtype={"patient_id": str, "series_id": str}
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
    return frame.dropna(how="all")


def read_series_meta(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``train_series_meta.csv`` (validated integer ids)."""
    path = Path(path)
    frame = _read_csv(path)
    line = dict(enumerate(frame.index + 2))
    frame = frame.reset_index(drop=True)
    missing = [c for c in ("patient_id", "series_id") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in ("patient_id", "series_id"):
        frame[column] = [
            parse_id(v, column, f"{path}:{line[i]}") for i, v in enumerate(frame[column])
        ]
    return frame
