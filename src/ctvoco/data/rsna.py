"""The RSNA 2023 Abdominal Trauma Detection layout: series discovery and label files.

::

    <root>/train.csv                        one row per patient (labels)
    <root>/train_series_meta.csv            patient_id, series_id, aortic_hu, incomplete_organ
    <root>/train_images/<patient_id>/<series_id>/<instance>.dcm
    <root>/test_images/<patient_id>/<series_id>/<instance>.dcm
    <root>/segmentations/<series_id>.nii     organ masks of some training series

Patient and series ids are integers; they are validated before they become paths or keys.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ctvoco.errors import DataError, UserError, look_up_option
from ctvoco.io.masks import MASK_SUFFIXES
from ctvoco.io.series import SeriesSource
from ctvoco.labels import LABEL_COLUMNS, PREDICTION_COLUMNS, TARGETS, target_columns

log = logging.getLogger(__name__)

RSNA_URL = "https://www.kaggle.com/competitions/rsna-2023-abdominal-trauma-detection/data"
SPLITS = ("train", "test")
SEGMENTATIONS = "segmentations"
"""The folder of RSNA's organ masks, ``<series_id>.nii``, beside ``train_images``."""


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
    look_up_option("split", split, SPLITS)
    folder = Path(root) / f"{split}_images"
    if not folder.is_dir():
        raise UserError(
            f"RSNA 2023 data not found: expected {split}_images/<patient>/<series>/*.dcm under "
            f"{Path(root).resolve()} (data.root); download it from {RSNA_URL} (kaggle "
            "competitions download -c rsna-2023-abdominal-trauma-detection), unzip, and set "
            "data.root=/path/to/rsna-2023-abdominal-trauma-detection"
        )
    return folder


@dataclass
class PatientFolder:
    """One ``<patient_id>/`` folder of a series tree and what listing it gave.

    Attributes:
        path: The folder.
        series: Its ``<series_id>/`` folders as sources, keyed ``<patient_id>_<series_id>``.
        error: Why the folder could not be listed (``series`` is then empty); ``None`` if
            it could.
    """

    path: Path
    series: list[SeriesSource] = field(default_factory=list)
    error: OSError | None = None

    @property
    def patient_id(self) -> str:
        """The canonical integer id (``00123`` -> ``123``)."""
        return str(int(self.path.name))


def walk_series_tree(
    folder: Path, what: str, advice: str = ""
) -> tuple[list[PatientFolder], list[Path]]:
    """The ``<folder>/<patient_id>/<series_id>/`` tree: patients, their series, and the rest.

    Entries are visited in sorted order; hidden ones are ignored. A patient folder that
    cannot be listed (no permission, I/O error) is returned with its error, so the caller
    decides what its patient gets.

    Args:
        folder: The tree's root (e.g. ``test_images``).
        what: What ``folder`` is, for the error (``images folder``).
        advice: What to do when ``folder`` cannot be listed, appended to the error.

    Returns:
        ``(patients, skipped)``: every integer-named patient folder, and every other entry
        (files and non-integer folders, at either level).

    Raises:
        UserError: ``folder`` itself cannot be listed (naming it and the reason).
    """
    try:
        entries = _visible(folder)
    except OSError as exc:
        suffix = f"; {advice}" if advice else ""
        raise UserError(
            f"{folder}: cannot list the {what} ({exc.strerror or exc}){suffix}"
        ) from exc
    patients: list[PatientFolder] = []
    skipped: list[Path] = []
    for patient_dir in entries:
        if not patient_dir.is_dir() or not is_id(patient_dir.name):
            skipped.append(patient_dir)
            continue
        patient = PatientFolder(patient_dir)
        patients.append(patient)
        try:
            series_dirs = _visible(patient_dir)
        except OSError as exc:
            patient.error = exc
            continue
        for series_dir in series_dirs:
            if not series_dir.is_dir() or not is_id(series_dir.name):
                skipped.append(series_dir)
                continue
            pid, sid = patient.patient_id, str(int(series_dir.name))
            patient.series.append(SeriesSource(f"{pid}_{sid}", str(series_dir), pid, sid))
    return patients, skipped


def _visible(folder: Path) -> list[Path]:
    """The entries of ``folder`` whose names do not start with a dot, sorted."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def rsna_series(root: str | os.PathLike[str], split: str = "train") -> list[SeriesSource]:
    """Every series folder of the split, keyed ``<patient_id>_<series_id>``.

    Non-integer folder names are reported and skipped; hidden entries are ignored. A patient
    folder that cannot be listed (no permission, I/O error) becomes one source keyed
    ``<patient_id>`` that fails with the reason, so its series are recorded as failed and
    every other patient is still processed. A series with an organ mask in
    ``<root>/segmentations`` gets it as its ``mask``.

    Raises:
        UserError: The images folder itself cannot be listed.
    """
    folder = images_dir(root, split)
    patients, skipped = walk_series_tree(
        folder,
        "images folder",
        "make it readable or set data.root= to another copy of the data",
    )
    sources = []
    for patient in patients:
        if patient.error is not None:
            sources.append(_unreadable_patient(patient.path, patient.error))
        sources.extend(patient.series)
    if skipped:
        log.warning(
            "%s: skipped %d entries whose names are not integer ids: %s",
            folder,
            len(skipped),
            ", ".join(str(p.relative_to(folder)) for p in skipped[:5]),
        )
    return with_masks(Path(root) / SEGMENTATIONS, sources, report_unmatched=split == "train")


def with_masks(
    folder: Path, sources: list[SeriesSource], *, report_unmatched: bool = True
) -> list[SeriesSource]:
    """``sources`` with the organ mask ``<folder>/<series_id>.nii[.gz]`` of each series that has one.

    Args:
        folder: RSNA's ``segmentations`` folder (absent: no masks).
        sources: The series.
        report_unmatched: Log the mask files whose series is not among ``sources``.
    """
    if not folder.is_dir():
        return sources
    masks: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = next((path.name[: -len(x)] for x in MASK_SUFFIXES if path.name.endswith(x)), "")
        if is_id(stem) and path.is_file():
            masks.setdefault(str(int(stem)), path)
    out = [
        replace(s, mask=str(masks[s.series_id])) if s.series_id in masks and not s.error else s
        for s in sources
    ]
    unmatched = sorted(set(masks) - {s.series_id for s in sources})
    if unmatched and report_unmatched:
        log.warning(
            "%s: %d segmentation(s) of series not found in the images: %s",
            folder,
            len(unmatched),
            ", ".join(masks[k].name for k in unmatched[:5]),
        )
    return out


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
