"""Fixtures of the distributed tests: a tiny volume cache, data modules, a CLI cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_SHAPE

PREPROCESS = {"shape": list(TINY_SHAPE)}
"""The tiny cache shape of every distributed test."""


def rsna_datamodule(cohort: Any, cache_dir: Path, **kwargs: Any):
    """An :class:`~ctvoco.data.RSNADataModule` over ``cache_dir`` with the tiny test settings."""
    from ctvoco.data import RSNADataModule

    options = {"preprocess": PREPROCESS, "num_workers": 0, "batch_size": 2, **kwargs}
    return RSNADataModule(root=str(cohort.rsna_root), cache_dir=str(cache_dir), **options)


@pytest.fixture(scope="session")
def ddp_cache(tiny_cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort's RSNA train series preprocessed once (the DDP runs only read it)."""
    cache_dir = tmp_path_factory.mktemp("ddp_cache")
    rsna_datamodule(tiny_cohort, cache_dir).prepare_data()
    return cache_dir


@pytest.fixture(scope="module")
def cli_cohort(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic cohort for the console-script runs (its cache is built by the first run)."""
    from ctvoco.synth.cohort import make_synthetic_cohort

    return make_synthetic_cohort(
        tmp_path_factory.mktemp("cli_cohort"),
        n_patients=10,
        n_test=0,
        n_flare=2,
        shape=(24, 80, 80),
        spacing=(10.0, 4.4, 4.4),
        progress=False,
    )
