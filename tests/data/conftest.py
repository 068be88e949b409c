"""Fixtures for the data tests: label tables written as files, cached tiny cohorts, copies."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ctvoco.labels import LABEL_COLUMNS, TARGET_CLASSES, TARGETS
from tests.conftest import TINY_SHAPE

PREPROCESS = {"shape": list(TINY_SHAPE)}
"""Preprocessing of every data-module test (the tiny cache shape, default RSNA window)."""

LOADER = {"num_workers": 0, "batch_size": 2, "preprocess_workers": 0}


def label_row(patient_id: object, **classes: int) -> dict[str, Any]:
    """One ``train.csv`` row: ``patient_id``, the 13 one-hot columns and ``any_injury``.

    ``classes`` gives a class index per target (default 0, healthy), e.g. ``kidney=2``.
    """
    row: dict[str, Any] = {"patient_id": patient_id}
    for target, names in TARGET_CLASSES.items():
        chosen = classes.get(target, 0)
        for i, name in enumerate(names):
            row[f"{target}_{name}"] = int(i == chosen)
    row["any_injury"] = int(any(classes.get(t, 0) for t in TARGETS))
    return row


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None):
    """Write ``rows`` as a CSV file (``columns`` picks and orders the columns)."""
    columns = list(columns or ["patient_id", *LABEL_COLUMNS])
    lines = [",".join(columns)]
    lines += [",".join(str(row[c]) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def random_labels(n: int, seed: int) -> pd.DataFrame:
    """A validated-looking label table of ``n`` patients with rare injury classes."""
    rng = np.random.default_rng(seed)
    probs = {
        "bowel": [0.96, 0.04],
        "extravasation": [0.92, 0.08],
        "kidney": [0.90, 0.06, 0.04],
        "liver": [0.88, 0.09, 0.03],
        "spleen": [0.87, 0.07, 0.06],
    }
    rows = [
        label_row(1000 + 3 * i, **{t: int(rng.choice(len(p), p=p)) for t, p in probs.items()})
        for i in range(n)
    ]
    frame = pd.DataFrame(rows)
    return frame[["patient_id", *LABEL_COLUMNS]]


def expected_classes(labels: pd.DataFrame) -> dict[int, list[int]]:
    """Patient id -> class index per target, computed from the one-hot columns."""
    out = {}
    for _, row in labels.iterrows():
        out[int(row["patient_id"])] = [
            int(np.argmax([row[f"{t}_{c}"] for c in TARGET_CLASSES[t]])) for t in TARGETS
        ]
    return out


def copy_cache(source: Path, target: Path) -> Path:
    """A copy of a volume cache without its saved fold files."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("folds_*.csv"))
    return target


def copy_rsna_tree(source: Path, target: Path, *, with_labels: bool = True) -> Path:
    """A copy of an RSNA tree: the CSV files copied, the image folders linked."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_dir():
            (target / path.name).symlink_to(path.resolve(), target_is_directory=True)
        elif with_labels or path.name != "train.csv":
            shutil.copy2(path, target / path.name)
    return target


def rsna_module(rsna_root: Path, cache_dir: Path, **kwargs: Any):
    """An :class:`RSNADataModule` with the tiny test settings."""
    from ctvoco.data import RSNADataModule

    options = {"preprocess": PREPROCESS, **LOADER, **kwargs}
    return RSNADataModule(root=str(rsna_root), cache_dir=str(cache_dir), **options)


def flare_module(flare_root: Path, cache_dir: Path, **kwargs: Any):
    """A :class:`FLAREDataModule` with the tiny test settings."""
    from ctvoco.data import FLAREDataModule

    options = {"preprocess": PREPROCESS, **LOADER, **kwargs}
    return FLAREDataModule(root=str(flare_root), cache_dir=str(cache_dir), **options)


@pytest.fixture(scope="session")
def rsna_cache(tiny_cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort's RSNA train series preprocessed once (tests must not add series)."""
    cache_dir = tmp_path_factory.mktemp("rsna_cache")
    rsna_module(tiny_cohort.rsna_root, cache_dir).prepare_data()
    return cache_dir


@pytest.fixture(scope="session")
def flare_cache(tiny_cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort's FLARE volumes preprocessed once."""
    cache_dir = tmp_path_factory.mktemp("flare_cache")
    flare_module(tiny_cohort.flare_root, cache_dir).prepare_data()
    return cache_dir
