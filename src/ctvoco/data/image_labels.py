"""RSNA 2023 image-level labels: which DICOM images show bowel injury or active extravasation.

``image_level_labels.csv`` has one row per image that shows an injury::

    patient_id, series_id, instance_number, injury_name      (Bowel | Active_Extravasation)

Rows exist only for some series of some positive patients. Per series they become per-slice
targets of the cached volume, two channels in :data:`IMAGE_TARGETS` order, and one
``known`` flag per channel:

- a patient negative for an injury is negative on every slice of every series (known);
- a series with at least one row for an injury has those slices positive, the others
  negative (known);
- a series of a positive patient without a row for that injury is unknown (not negative).

Instance numbers are matched to slices through the cache record's ``instance_numbers``
(the ``InstanceNumber`` of every source slice, in the cranial-to-caudal order of the cached
array) and its ``crop_box``: cached slice ``j`` of a depth-``D`` array covers source slices
``[z0 + j*n/D, z0 + (j+1)*n/D)`` with ``n = z1 - z0`` (the area resize of
:mod:`ctvoco.preprocessing.resize`); it is positive when it overlaps a labelled source slice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctvoco.data.rsna import parse_id
from ctvoco.errors import DataError

log = logging.getLogger(__name__)

IMAGE_TARGETS = ("bowel", "extravasation")
"""Channels of the per-slice targets."""

INJURY_NAMES = {"Bowel": 0, "Active_Extravasation": 1}
"""``injury_name`` values and their channel in :data:`IMAGE_TARGETS`."""

COLUMNS = ("patient_id", "series_id", "instance_number", "injury_name")
FILE_NAME = "image_level_labels.csv"


def read_image_level_labels(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate ``image_level_labels.csv``.

    Returns:
        ``patient_id``, ``series_id``, ``instance_number`` (int64) and ``channel`` (0 bowel,
        1 extravasation), duplicates dropped.

    Raises:
        DataError: Naming the file and the CSV line of the first bad row.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: image-level label file not found")
    try:
        frame = pd.read_csv(path, dtype=str, skip_blank_lines=False, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    line = frame.index + 2  # the header is line 1
    blank = (frame[list(COLUMNS)] == "").all(axis=1).to_numpy()
    rows = []
    for i in np.flatnonzero(~blank):
        where = f"{path}:{line[i]}"
        record = frame.iloc[i]
        name = str(record["injury_name"]).strip()
        if name not in INJURY_NAMES:
            raise DataError(
                f"{where}: injury_name must be one of {', '.join(INJURY_NAMES)}; got {name!r}"
            )
        rows.append(
            (
                parse_id(record["patient_id"], "patient_id", where),
                parse_id(record["series_id"], "series_id", where),
                parse_id(record["instance_number"], "instance_number", where),
                INJURY_NAMES[name],
            )
        )
    columns = ["patient_id", "series_id", "instance_number", "channel"]
    out = pd.DataFrame(rows, columns=columns, dtype=np.int64)
    return out.drop_duplicates().reset_index(drop=True)


def source_spans(z0: int, z1: int, depth: int) -> np.ndarray:
    """``(depth, 2)`` ``[start, end)`` source-slice range each cached slice covers."""
    if z1 <= z0 or depth < 1:
        raise ValueError(f"empty slice range {z0}:{z1} or depth {depth}")
    edges = z0 + np.arange(depth + 1) * ((z1 - z0) / depth)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def slice_targets(
    labelled: Mapping[int, Sequence[int]],
    instance_numbers: Sequence[int | None],
    crop_z: tuple[int, int],
    depth: int,
    where: str = "series",
) -> np.ndarray:
    """Per cached slice, whether it shows each injury: ``(depth, 2)`` uint8.

    Args:
        labelled: ``{channel: instance numbers of the images showing that injury}``.
        instance_numbers: ``InstanceNumber`` of each source slice, in cached order.
        crop_z: ``(z0, z1)``, the source slices the cached array was made from.
        depth: Depth of the cached array.
        where: The series, for messages.
    """
    position = {int(n): k for k, n in enumerate(instance_numbers) if n is not None}
    spans = source_spans(int(crop_z[0]), int(crop_z[1]), depth)
    out = np.zeros((depth, len(IMAGE_TARGETS)), dtype=np.uint8)
    for channel, numbers in labelled.items():
        unknown = sorted(int(n) for n in numbers if int(n) not in position)
        if unknown:
            log.warning(
                "%s: image-level label(s) name instance number(s) %s that are not slices "
                "of the series; they are ignored",
                where,
                ", ".join(map(str, unknown[:5])),
            )
        for k in (position[int(n)] for n in numbers if int(n) in position):
            overlap = np.minimum(spans[:, 1], k + 1) - np.maximum(spans[:, 0], k)
            out[overlap > 1e-9, channel] = 1
    return out


def crop_range(record: Mapping[str, Any]) -> tuple[int, int]:
    """``(z0, z1)`` of a cache record's ``crop_box`` (``"z0:z1,y0:y1,x0:x1"``)."""
    text = str(record.get("crop_box", ""))
    try:
        z0, z1 = (int(v) for v in text.split(",")[0].split(":"))
    except ValueError:
        raise DataError(f"cache record {record.get('key')}: unreadable crop_box {text!r}") from None
    return z0, z1


def attach_slice_labels(
    items: pd.DataFrame,
    image_labels: pd.DataFrame,
    record_of: Callable[[str], Mapping[str, Any] | None],
    depth: int,
    source: str = FILE_NAME,
) -> pd.DataFrame:
    """Add ``slice_labels`` (``(depth, 2)`` uint8 per series) and ``slice_known`` (``(2,)``).

    Args:
        items: Labelled item rows (``key``, ``patient_id``, ``series_id``, ``bowel``,
            ``extravasation`` classes).
        image_labels: :func:`read_image_level_labels`.
        record_of: The cache record of a key (``instance_numbers``, ``crop_box``), e.g.
            :meth:`~ctvoco.cache.volume_cache.VolumeCache.record`; asked only for series
            with rows.
        depth: Depth of the cached arrays.
        source: The label file, for messages.

    Raises:
        DataError: A row names an injury that ``train.csv`` says the patient does not have.
    """
    out = items.copy()
    grouped = {
        (int(p), int(s)): part for (p, s), part in image_labels.groupby(["patient_id", "series_id"])
    }
    labels, known, stale = [], [], []
    for row in out.itertuples(index=False):
        patient, series = int(row.patient_id), int(row.series_id)
        positive = (int(row.bowel) > 0, int(row.extravasation) > 0)
        part = grouped.get((patient, series))
        target = np.zeros((depth, len(IMAGE_TARGETS)), dtype=np.uint8)
        flags = np.array([not p for p in positive], dtype=np.float32)
        if part is not None:
            contradicted = [IMAGE_TARGETS[c] for c in part["channel"].unique() if not positive[c]]
            if contradicted:
                raise DataError(
                    f"{source}: series {patient}/{series} has image-level {contradicted[0]} "
                    f"labels but train.csv says patient {patient} has no {contradicted[0]} injury"
                )
            record = record_of(str(row.key)) or {}
            numbers = record.get("instance_numbers")
            if numbers is None:
                stale.append(str(row.key))
            else:
                wanted = {int(c): p["instance_number"].tolist() for c, p in part.groupby("channel")}
                target = slice_targets(
                    wanted, numbers, crop_range(record), depth, f"{source}: {patient}/{series}"
                )
                flags[list(wanted)] = 1.0
        labels.append(target)
        known.append(flags)
    if stale:
        log.warning(
            "%d series have image-level labels but their cache records lack instance numbers "
            "(%s); their slices count as unknown. Build the cache again into a new "
            "data.cache_dir to use them",
            len(stale),
            ", ".join(stale[:5]),
        )
    out["slice_labels"] = labels
    out["slice_known"] = known
    return out
