"""The FLARE23 layout: unlabelled abdominal CT volumes as NIfTI files.

::

    <root>/imagesTr2200/FLARE23_0001_0000.nii.gz     partially labelled training scans
    <root>/unlabelTr1800/FLARE23_2201_0000.nii.gz    unlabelled training scans

Any folder layout works: volumes are found by a glob pattern (default ``**/*_0000.nii.gz``)
and keyed by their case id (``FLARE23_0001``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ctvoco.cache.builder import SeriesSource
from ctvoco.errors import DataError, UserError
from ctvoco.io.nifti import nifti_case_id

FLARE_URL = "https://flare23.grand-challenge.org/"
DEFAULT_PATTERNS = ("**/*_0000.nii.gz",)


def flare_cases(
    root: str | os.PathLike[str], patterns: Sequence[str] = DEFAULT_PATTERNS
) -> list[SeriesSource]:
    """Every FLARE volume under ``root`` matching ``patterns``, keyed by case id.

    Raises:
        UserError: ``root`` is missing or holds no volume; the message says how to get FLARE23.
        DataError: Two files map to the same case id.
    """
    folder = Path(root)
    files = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    if not folder.is_dir() or not files:
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
    return list(sources.values())
