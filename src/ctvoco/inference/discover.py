"""The series to predict: a ``test_images``-style tree, walked as the RSNA layout is.

::

    <input>/test_images/<patient_id>/<series_id>/*.dcm    (or <input>/<patient_id>/...)

Every integer-named patient folder is a patient of the submission, also one whose series
cannot be listed or read (it gets the fallback prediction).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ctvoco.data.rsna import walk_series_tree
from ctvoco.errors import UserError
from ctvoco.io.series import SeriesSource

log = logging.getLogger(__name__)


def input_folder(input_dir: Path) -> Path:
    """``input_dir/test_images`` when it exists, else ``input_dir`` itself.

    Raises:
        UserError: ``input_dir`` is not a directory.
    """
    folder = input_dir / "test_images" if (input_dir / "test_images").is_dir() else input_dir
    if not folder.is_dir():
        raise UserError(f"input={input_dir}: no such directory")
    return folder


def discover_input(input_dir: Path) -> tuple[list[SeriesSource], list[str]]:
    """Series and patients of a ``test_images``-style tree (or its parent folder).

    Folders whose names are not integer ids are reported and skipped; files and hidden
    entries are ignored. A patient folder that cannot be listed is reported, and its
    patient kept (it gets the fallback prediction).

    Returns:
        The series sources, and the patient ids as canonical integer strings, sorted.

    Raises:
        UserError: No such directory, it cannot be listed, or it holds no patient folder.
    """
    folder = input_folder(input_dir)
    patients, skipped = walk_series_tree(folder, "input folder")
    for path in skipped:
        if path.is_dir():
            level = "patient" if path.parent == folder else "series"
            log.warning("%s: not an integer %s id, skipped", path, level)
    if not patients:
        raise UserError(f"input={input_dir}: expected <patient_id>/<series_id>/*.dcm folders")
    sources: list[SeriesSource] = []
    for patient in patients:
        if patient.error is not None:
            exc = patient.error
            log.warning(
                "%s: cannot list the patient folder (%s); the patient gets the fallback prediction",
                patient.path,
                exc.strerror or exc,
            )
        sources.extend(patient.series)
    return sources, [p.patient_id for p in patients]
