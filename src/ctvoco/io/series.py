"""One CT series to read (:class:`SeriesSource`) and the check of the key that names it.

A series is named by a *key*: ``<patient_id>_<series_id>`` for RSNA, ``<case_id>`` for
FLARE. The key becomes a file name in the volume cache, so it is checked here, where a
series is first described: letters, digits, ``_ . -``, never a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ctvoco.errors import DataError

KEY_PATTERN: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""What a series key may look like: up to 128 letters, digits, ``_ . -``."""


def check_key(key: str) -> str:
    """Validate a cache key: letters, digits, ``_ . -``; never a path.

    Returns:
        ``key``, unchanged.

    Raises:
        DataError: Naming the key.
    """
    if not KEY_PATTERN.fullmatch(key) or ".." in key:
        raise DataError(f"invalid cache key {key!r}: only letters, digits, '_', '.', '-' allowed")
    return key


@dataclass(frozen=True)
class SeriesSource:
    """One series to preprocess: its cache key, where it is read from, and its ids.

    ``error`` marks a source found unusable while discovering the data set (e.g. a patient
    folder that cannot be listed): it is recorded as failed with this message, unread.
    ``mask`` is the series' organ segmentation (a NIfTI file), when it has one.

    Raises:
        DataError: ``key`` is not a valid cache key (:func:`check_key`).
    """

    key: str
    source: str
    patient_id: str = ""
    series_id: str = ""
    error: str = ""
    mask: str = ""

    def __post_init__(self) -> None:
        check_key(self.key)
