"""The preprocessed series to predict: an existing volume cache, or one built from DICOM.

Series are preprocessed exactly as the models' training data was (their
:class:`~ctvoco.classify.spec.InferenceSpec`); what cannot be read is reported and listed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ctvoco.cache.builder import build_cache
from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.classify.spec import InferenceSpec
from ctvoco.data.loading import cache_items
from ctvoco.errors import UserError
from ctvoco.inference.discover import discover_input
from ctvoco.inference.writable import check_writable_dir
from ctvoco.preprocessing.pipeline import ALGORITHM_VERSION

log = logging.getLogger(__name__)


@dataclass
class PreparedInput:
    """The cached series ready to predict, the input's patients and its unusable series.

    Attributes:
        cache: The volume cache the items are read from.
        items: One row per usable series (``key``, ``cache``, ``patient_id``, ``series_id``).
        patients: Every patient of the input, canonical integer ids.
        failed: One record per series that could not be used (``key``, ``error``, ...).
    """

    cache: VolumeCache
    items: pd.DataFrame
    patients: list[str]
    failed: list[dict[str, Any]] = field(default_factory=list)


def prepare_input(
    input_dir: Path,
    output: Path,
    cache_dir: str | os.PathLike[str] | None,
    spec: InferenceSpec,
    workers: int,
) -> PreparedInput:
    """Use ``input_dir`` as a cache when it is one, else preprocess its DICOM tree.

    Args:
        input_dir: A volume cache, or a ``test_images`` tree (or its parent).
        output: The submission path; the cache goes beside it unless ``cache_dir`` is set.
        cache_dir: Where to cache the preprocessed series.
        spec: The models' inference spec (its preprocessing is used).
        workers: Preprocessing processes (0: this one).

    Raises:
        UserError: The cache was made with other preprocessing, or the cache directory
            cannot be written.
    """
    if spec.preprocess_version != ALGORITHM_VERSION:
        log.warning(
            "models were trained on preprocessing v%s; this ctvoco makes v%s",
            spec.preprocess_version,
            ALGORITHM_VERSION,
        )
    if (input_dir / "cache.json").is_file():
        prepared = _existing_cache(input_dir, spec)
    else:
        root = Path(cache_dir) if cache_dir else output.parent / "cache"
        prepared = _built_cache(input_dir, root, spec, workers)
    for record in prepared.failed:
        log.warning("series %s could not be used: %s", record["key"], record.get("error", ""))
    return prepared


def _existing_cache(input_dir: Path, spec: InferenceSpec) -> PreparedInput:
    """Every series of the cache at ``input_dir`` (which must hold the spec's variant)."""
    cache = VolumeCache(input_dir)
    try:
        cache.ensure_variant(spec.preprocess)
    except UserError as exc:
        raise UserError(
            f"input={input_dir}: {str(exc).split('; ')[0]}, not with the checkpoints' "
            "preprocessing; give the DICOM tree as input= (cache_dir= a new directory)"
        ) from exc
    manifest = cache.manifest()
    patients = sorted({str(p) for p in manifest["patient_id"]}, key=int)
    failed = manifest[manifest["status"] != "ok"].to_dict("records")
    return PreparedInput(cache, cache_items(cache, manifest), patients, failed)


def _built_cache(input_dir: Path, root: Path, spec: InferenceSpec, workers: int) -> PreparedInput:
    """The series of the DICOM tree at ``input_dir``, preprocessed into the cache ``root``."""
    sources, patients = discover_input(input_dir)
    check_writable_dir(root, f"cache_dir={root}", "cache_dir")
    cache = VolumeCache(root)
    try:
        summary = build_cache(sources, cache, spec.preprocess, num_workers=workers)
    except UserError as exc:
        # The cache's advice names the training programs' key; this program's is cache_dir.
        raise UserError(str(exc).replace("data.cache_dir", "cache_dir")) from exc
    failed = list(summary.failed)
    known = {s.key for s in sources}
    failed += [
        r for r in cache.records() if r["status"] != "ok" and r["key"] in known and r not in failed
    ]
    manifest = cache.manifest()
    return PreparedInput(
        cache, cache_items(cache, manifest[manifest["key"].isin(known)]), patients, failed
    )
