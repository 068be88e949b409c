"""ctvoco: 2D VoCo self-supervised pretraining on abdominal CT and CNN-LSTM trauma
classification on RSNA 2023, with Lightning and Hydra.

The names below are imported lazily, so ``import ctvoco`` stays fast and light::

    import ctvoco
    volume = ctvoco.read_dicom_series("train_images/10004/21057")
    array = ctvoco.preprocess_series(volume)           # (96, 256, 256) uint8
    scores = ctvoco.rsna_score(labels, predictions)     # the competition metric
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("ctvoco")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

_EXPORTS = {
    "CTVolume": "ctvoco.io",
    "read_dicom_series": "ctvoco.io",
    "read_nifti": "ctvoco.io",
    "write_dicom_series": "ctvoco.synth.dicom_writer",
    "write_nifti": "ctvoco.io",
    "PreprocessConfig": "ctvoco.preprocessing",
    "preprocess_series": "ctvoco.preprocessing",
    "VolumeCache": "ctvoco.cache",
    "build_cache": "ctvoco.cache",
    "make_synthetic_cohort": "ctvoco.synth.cohort",
    "RSNADataModule": "ctvoco.data",
    "FLAREDataModule": "ctvoco.data",
    "ConcatDataModule": "ctvoco.data",
    "read_rsna_labels": "ctvoco.data",
    "rsna_score": "ctvoco.metrics",
    "target_auc": "ctvoco.metrics",
    "VoCoPretrainer": "ctvoco.voco",
    "VoCoViews": "ctvoco.voco",
    "InjuryClassifier": "ctvoco.classify",
    "SliceStackViews": "ctvoco.classify",
    "create_backbone": "ctvoco.models",
    "export_backbone": "ctvoco.models",
    "load_backbone_weights": "ctvoco.models",
    "predict_submission": "ctvoco.inference",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ctvoco' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
