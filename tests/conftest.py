"""Shared fixtures: tiny synthetic cohorts and caches, and an environment with no network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tests never talk to wandb or a model hub.
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_SHAPE = (16, 64, 64)
"""Cache shape used by fast tests."""


def body_phantom(shape: tuple[int, int, int] = (12, 48, 56), seed: int = 0) -> np.ndarray:
    """A small HU volume with a body, spine, right-side and cranial markers and a table.

    Canonical orientation: slice 0 cranial, row 0 anterior, column 0 patient's right.
    """
    d, h, w = shape
    rng = np.random.default_rng(seed)
    hu = np.full(shape, -1000, dtype=np.int16)
    yy, xx = np.mgrid[0:h, 0:w]
    body = ((yy - 0.45 * h) / (0.35 * h)) ** 2 + ((xx - 0.5 * w) / (0.42 * w)) ** 2 <= 1
    hu[:, body] = 40
    spine = ((yy - 0.65 * h) ** 2 + (xx - 0.5 * w) ** 2) <= (0.06 * h) ** 2
    hu[:, spine] = 700
    right = ((yy - 0.45 * h) ** 2 + (xx - 0.25 * w) ** 2) <= (0.07 * h) ** 2
    hu[: d // 2, right] = 200
    hu[0, body & (xx > 0.6 * w)] = 150
    table_row = int(0.9 * h)
    hu[:, table_row : table_row + 2, int(0.1 * w) : int(0.9 * w)] = 0
    hu += rng.integers(-5, 6, size=shape, dtype=np.int16)
    return hu


@pytest.fixture
def phantom_hu() -> np.ndarray:
    """See :func:`body_phantom`."""
    return body_phantom()


SMALL_PHANTOM_SHAPE = (12, 48, 56)
"""Default shape of :func:`small_phantom`."""


def small_phantom(
    shape: tuple[int, int, int] = SMALL_PHANTOM_SHAPE,
    seed: int = 0,
    *,
    right_marker: bool = True,
    cranial_marker: bool = True,
    table: bool = True,
) -> np.ndarray:
    """Canonical int16 HU: body ellipse, posterior spine, right-side and cranial markers, table.

    Slice 0 is cranial, row 0 anterior, column 0 the patient's right; small noise makes any
    flip or permutation visible voxel by voxel. The markers and the table can be left out.
    """
    _, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    hu = np.full(shape, -1000, dtype=np.int16)
    body = ((yy - 0.45 * h) / (0.33 * h)) ** 2 + ((xx - 0.5 * w) / (0.42 * w)) ** 2 <= 1
    hu[:, body] = 40
    hu[:, (yy - 0.65 * h) ** 2 + (xx - 0.5 * w) ** 2 <= 16] = 700  # spine, posterior
    if right_marker:
        hu[:, (yy - 0.4 * h) ** 2 + (xx - 0.2 * w) ** 2 <= 16] = 200  # patient's right
    if cranial_marker:
        hu[:2, (yy - 0.3 * h) ** 2 + (xx - 0.6 * w) ** 2 <= 9] = 120  # cranial end
    if table:
        row = int(0.9 * h)
        hu[:, row : row + 2, int(0.1 * w) : int(0.9 * w)] = 0
    noise = np.random.default_rng(seed).integers(-5, 6, size=shape)
    return (hu + noise).astype(np.int16)


@pytest.fixture
def small_phantom_hu() -> np.ndarray:
    """See :func:`small_phantom` (default shape and seed)."""
    return small_phantom()


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic cohort (real DICOM and NIfTI files), written once per session."""
    from ctvoco.synth.cohort import make_synthetic_cohort

    root: Path = tmp_path_factory.mktemp("cohort")
    return make_synthetic_cohort(
        root,
        n_patients=10,
        n_test=2,
        n_flare=3,
        seed=18,
        shape=(24, 96, 96),
        spacing=(10.0, 3.6, 3.6),
        second_series_fraction=0.3,
        progress=False,
    )


@pytest.fixture(scope="session")
def tiny_rsna_cache(tiny_cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort's RSNA series preprocessed once (``TINY_SHAPE``), for runs that only train."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("rsna_cache")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "ctvoco-preprocess"),
            f"data.root={tiny_cohort.rsna_root}",
            f"data.cache_dir={root}",
            f"data.preprocess.shape=[{','.join(map(str, TINY_SHAPE))}]",
            f"paths.output_dir={root.parent / 'pre'}",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    return root


SEG_CACHE_SHAPE = (12, 32, 32)


@pytest.fixture(scope="session")
def masked_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 patients (5-6 series) of the phantom, cached at 12 x 32 x 32 with their masks."""
    import io

    from rich.console import Console

    from ctvoco.cache import VolumeCache, build_cache
    from ctvoco.data.rsna import rsna_series
    from ctvoco.preprocessing import PreprocessConfig
    from ctvoco.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("seg")
    cohort = make_synthetic_cohort(
        root / "cohort",
        n_patients=4,
        n_flare=0,
        seed=2,
        shape=(16, 64, 64),
        second_series_fraction=0.5,
        segmented_fraction=1.0,
        progress=False,
    )
    cache = VolumeCache(root / "cache")
    build_cache(
        rsna_series(cohort.rsna_root),
        cache,
        PreprocessConfig(shape=SEG_CACHE_SHAPE),
        console=Console(file=io.StringIO()),
    )
    assert len(cache.mask_keys()) >= 4
    return cache.root
