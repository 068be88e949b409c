"""Files that a page's snippets read, written into the snippet's working directory.

A page asks for them with ``<!-- snippet-env: NAME ... -->``; each is small, so the
snippet runs at tiny size with its code exactly as the page shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

SERIES = ("10004", "21057")
"""The patient and series of the RSNA paths the pages use."""
FLARE_CASE = "imagesTr2200/FLARE23_0001_0000.nii.gz"


def _phantom() -> tuple[np.ndarray, tuple[float, float, float]]:
    """A small synthetic abdomen in HU and its voxel size (mm)."""
    from ctvoco.synth.render import make_phantom

    spacing = (20.0, 5.0, 5.0)
    return make_phantom(0, shape=(12, 64, 64), spacing=spacing).hu, spacing


def dicom_series(workdir: Path) -> None:
    """``train_images/10004/21057`` (DICOM), a FLARE23 NIfTI case, and for patient 10004
    a ``train.csv`` row and a ``submission.csv`` row."""
    import pandas as pd

    from ctvoco.io.atomic import write_csv_atomic
    from ctvoco.io.nifti import write_nifti
    from ctvoco.labels import LABEL_COLUMNS, PREDICTION_COLUMNS
    from ctvoco.synth.dicom_writer import SeriesTags, new_uid, write_dicom_series

    hu, spacing = _phantom()
    patient, series = SERIES
    tags = SeriesTags(patient_id=patient, series_uid=new_uid(series), study_uid=new_uid(patient))
    write_dicom_series(hu, workdir / "train_images" / patient / series, spacing, tags)
    (workdir / FLARE_CASE).parent.mkdir(parents=True, exist_ok=True)
    write_nifti(hu, workdir / FLARE_CASE, spacing)
    labels = {c: int(c.endswith("healthy")) for c in LABEL_COLUMNS}
    frames = {
        "train.csv": pd.DataFrame([{"patient_id": int(patient), **labels}]),
        "submission.csv": pd.DataFrame(
            [{"patient_id": int(patient), **dict.fromkeys(PREDICTION_COLUMNS, 0.5)}]
        ),
    }
    for name, frame in frames.items():
        write_csv_atomic(workdir / name, frame, index=False)


def demo_outputs(workdir: Path) -> None:
    """What ``make demo`` leaves where the pages look: an RSNA volume cache with one series
    (``demo/cohort/cache/rsna``) and a backbone export (``demo/pretrain/export``)."""
    from ctvoco.cache.volume_cache import VolumeCache
    from ctvoco.io.atomic import torch_save_atomic
    from ctvoco.models.backbone import create_backbone

    rng = np.random.default_rng(0)
    cache = VolumeCache(workdir / "demo/cohort/cache/rsna")
    cache.write("10_20", rng.integers(0, 256, size=(10, 48, 48), dtype=np.uint8))
    cache.write_record({"key": "10_20", "patient_id": "10", "series_id": "20", "status": "ok"})
    export = workdir / "demo/pretrain/export/test_efficientnet.pt"
    export.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(create_backbone("test_efficientnet").state_dict(), export)


FIXTURES: dict[str, Callable[[Path], None]] = {
    "dicom-series": dicom_series,
    "demo-outputs": demo_outputs,
}
"""``<!-- snippet-env: NAME -->`` -> what it writes into the working directory."""
