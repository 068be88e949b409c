"""The FLARE23 layout: unlabelled abdominal CT volumes as NIfTI files.

::

    <root>/imagesTr2200/FLARE23_0001_0000.nii.gz     partially labelled training scans
    <root>/unlabelTr1800/FLARE23_2201_0000.nii.gz    unlabelled training scans

Any folder layout works: volumes are found by a glob pattern (default ``**/*_0000.nii.gz``)
and keyed by their case id (``FLARE23_0001``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ctvoco.errors import DataError, UserError
from ctvoco.io.nifti import nifti_case_id
from ctvoco.io.series import SeriesSource

log = logging.getLogger(__name__)

FLARE_URL = "https://flare23.grand-challenge.org/"
DEFAULT_PATTERNS = ("**/*_0000.nii.gz",)


def flare_cases(
    root: str | os.PathLike[str], patterns: Sequence[str] = DEFAULT_PATTERNS
) -> list[SeriesSource]:
    """Every FLARE volume under ``root`` matching ``patterns``, keyed by case id.

    A sub-folder that cannot be listed is not skipped silently: it becomes a source that
    fails with the reason (keyed by its path under ``root``), so the cache summary counts it
    as failed and names it, and every readable volume is still used.

    Raises:
        UserError: ``root`` is missing or holds no volume; the message says how to get FLARE23.
        DataError: Two files map to the same case id.
    """
    folder = Path(root)
    unreadable = unreadable_folders(folder)
    files = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    if not folder.is_dir() or not (files or unreadable):
        raise UserError(
            f"FLARE23 data not found: expected CT volumes matching {', '.join(patterns)} under "
            f"{folder.resolve()} (data.root); register and download FLARE23 from {FLARE_URL} "
            "(imagesTr2200 and unlabelTr1800), unzip, and set data.root=/path/to/FLARE23"
        )
    sources: dict[str, SeriesSource] = {}
    for path in files:
        case = nifti_case_id(path)
        if case in sources:
            raise DataError(f"{path}: case id {case} also comes from {sources[case].source}")
        sources[case] = SeriesSource(case, str(path), patient_id=case, series_id="")
    return list(sources.values()) + [_unreadable_source(folder, d, e) for d, e in unreadable]


def unreadable_folders(root: Path) -> list[tuple[Path, OSError]]:
    """Every folder under ``root`` (``root`` included) that cannot be listed, with the error."""
    failed: list[tuple[Path, OSError]] = []

    def collect(exc: OSError) -> None:
        if exc.filename is not None:
            failed.append((Path(exc.filename), exc))

    if root.is_dir():
        for _ in os.walk(root, onerror=collect, followlinks=True):
            pass
    return sorted(failed, key=lambda item: str(item[0]))


def _unreadable_source(root: Path, folder: Path, exc: OSError) -> SeriesSource:
    """A failing source standing for the volumes of a folder that cannot be listed."""
    relative = folder.relative_to(root).parts if folder != root else (folder.name,)
    key = "unreadable." + "_".join(re.sub(r"[^A-Za-z0-9_.-]", "-", p) for p in relative)
    error = f"{folder}: cannot list the folder ({exc.strerror or exc}); its volumes are missing"
    log.warning("%s; it is recorded as failed", error)
    return SeriesSource(key, str(folder), patient_id=key, series_id="", error=error)
