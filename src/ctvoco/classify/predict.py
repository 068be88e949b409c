"""Predict a submission from CT series with one or more trained classifiers.

``predict_submission`` reads a DICOM tree in the competition's ``test_images`` layout
(``<patient_id>/<series_id>/*.dcm``) or an existing volume cache, preprocesses what is
needed exactly as the models were trained, runs every checkpoint (with test-time flips),
averages the checkpoints, aggregates series per patient and writes a valid submission:
every patient once, each target's probabilities summing to 1. A series that cannot be read
is reported; its patient is predicted from its other series or, failing that, from the
training prevalence, with a warning — never a missing row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ctvoco.cache.builder import SeriesSource, build_cache
from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.classify.module import InjuryClassifier
from ctvoco.classify.views import SliceStackViews
from ctvoco.data.dataset import CachedVolumeDataset
from ctvoco.data.rsna import is_id
from ctvoco.errors import DataError, UserError
from ctvoco.metrics.rsna import aggregate_predictions
from ctvoco.preprocessing.pipeline import ALGORITHM_VERSION, PreprocessConfig
from ctvoco.schema import PREDICTION_COLUMNS, TARGETS, target_columns

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """A written submission and what happened on the way."""

    submission: pd.DataFrame
    series: pd.DataFrame
    failed_series: list[dict[str, Any]] = field(default_factory=list)
    fallback_patients: list[str] = field(default_factory=list)


def load_classifier(path: str | os.PathLike[str], device: torch.device) -> InjuryClassifier:
    """A trained classifier from its checkpoint (read as data, weights only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint={path}: no such file")
    try:
        model = InjuryClassifier.load_from_checkpoint(
            path, map_location="cpu", weights_only=True, init="random", weights_dir=None
        )
    except Exception as exc:  # unpickling refused, corrupt file, another module's checkpoint
        raise DataError(
            f"{path}: not an InjuryClassifier checkpoint, or unreadable ({type(exc).__name__}: {exc})"
        ) from exc
    if not model.hparams.get("data_config"):
        raise DataError(f"{path}: the checkpoint does not record its preprocessing (data_config)")
    return model.to(device).eval()


def discover_input(input_dir: Path) -> tuple[list[SeriesSource], list[str]]:
    """Series and patients of a ``test_images``-style tree (or its parent folder)."""
    folder = input_dir / "test_images" if (input_dir / "test_images").is_dir() else input_dir
    if not folder.is_dir():
        raise UserError(f"input={input_dir}: no such directory")
    patients, sources = [], []
    for patient_dir in sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        if not is_id(patient_dir.name):
            log.warning("%s: not an integer patient id, skipped", patient_dir)
            continue
        patients.append(patient_dir.name)
        for series_dir in sorted(p for p in patient_dir.iterdir() if p.is_dir()):
            if is_id(series_dir.name):
                pid, sid = patient_dir.name, series_dir.name
                sources.append(
                    SeriesSource(
                        f"{int(pid)}_{int(sid)}", str(series_dir), str(int(pid)), str(int(sid))
                    )
                )
    if not patients:
        raise UserError(f"input={input_dir}: expected <patient_id>/<series_id>/*.dcm folders")
    return sources, [str(int(p)) for p in patients]


def predict_submission(
    checkpoints: Sequence[str | os.PathLike[str]],
    input_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 2,
    num_workers: int = 0,
    preprocess_workers: int = 0,
    tta: bool | None = None,
    aggregate: str = "max",
    device: str = "auto",
) -> Prediction:
    """Write ``output`` (submission CSV) for every patient under ``input_dir``.

    Args:
        checkpoints: One or more classifier checkpoints (ensembled by averaging).
        input_dir: ``test_images`` tree (or its parent), or an existing volume cache.
        output: Submission CSV path.
        cache_dir: Where to cache preprocessed series (default: beside ``output``).
        batch_size: Series per forward pass.
        num_workers: DataLoader workers.
        preprocess_workers: Processes for preprocessing.
        tta: Test-time flips (default: what each model was trained with).
        aggregate: Per-patient aggregation of series, ``max`` or ``mean``.
        device: ``auto``, ``cpu``, ``cuda``...

    Returns:
        The submission, the series-level predictions and what failed.
    """
    if not checkpoints:
        raise UserError("checkpoint= is required (one path or a list)")
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    models = [load_classifier(p, dev) for p in checkpoints]
    data_config = models[0].hparams.data_config
    if any(m.hparams.data_config["preprocess"] != data_config["preprocess"] for m in models[1:]):
        raise UserError(
            "the checkpoints were trained on differently preprocessed data; ensemble them separately"
        )
    input_dir = Path(input_dir)
    cache, items, patients, failed = _prepare_cache(
        input_dir, output, cache_dir, data_config, preprocess_workers
    )
    views = _eval_views(data_config.get("views", {}))
    series = _run_models(models, cache, items, views, batch_size, num_workers, tta, dev)
    submission, fallback = _submission(series, patients, models, aggregate, input_dir)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    submission.to_csv(tmp, index=False)
    tmp.replace(out)
    series.to_csv(out.with_name("series_predictions.csv"), index=False)
    if failed:
        pd.DataFrame(failed).to_csv(out.with_name("failed_series.csv"), index=False)
    return Prediction(submission, series, failed, fallback)


def _prepare_cache(
    input_dir: Path,
    output: str | os.PathLike[str],
    cache_dir: Any,
    data_config: dict[str, Any],
    workers: int,
) -> tuple[VolumeCache, pd.DataFrame, list[str], list[dict[str, Any]]]:
    fingerprint = dict(data_config["preprocess"])
    version = fingerprint.pop("algorithm_version", ALGORITHM_VERSION)
    if version != ALGORITHM_VERSION:
        log.warning(
            "models were trained on preprocessing v%s; this ctvoco makes v%s",
            version,
            ALGORITHM_VERSION,
        )
    config = PreprocessConfig.from_mapping(fingerprint)
    if (input_dir / "cache.json").is_file():
        cache = VolumeCache(input_dir)
        cache.ensure_variant(config)
        manifest = cache.manifest()
        patients = sorted({str(p) for p in manifest["patient_id"]}, key=int)
        failed = manifest[manifest["status"] != "ok"].to_dict("records")
    else:
        sources, patients = discover_input(input_dir)
        cache = VolumeCache(cache_dir or Path(output).parent / "cache")
        summary = build_cache(sources, cache, config, num_workers=workers)
        failed = list(summary.failed)
        known = {s.key for s in sources}
        failed += [
            r
            for r in cache.records()
            if r["status"] != "ok" and r["key"] in known and r not in failed
        ]
        manifest = cache.manifest()
        manifest = manifest[manifest["key"].isin(known)]
    for record in failed:
        log.warning("series %s could not be used: %s", record["key"], record.get("error", ""))
    ready = manifest[manifest["status"] == "ok"].copy()
    ready["cache"] = str(cache.root)
    ready["patient_id"] = ready["patient_id"].astype(str)
    ready["series_id"] = ready["series_id"].astype(str)
    return (
        cache,
        ready[["key", "cache", "patient_id", "series_id"]].reset_index(drop=True),
        patients,
        failed,
    )


def _eval_views(config: dict[str, Any]) -> SliceStackViews:
    views = SliceStackViews(
        **{k: v for k, v in config.items() if k in SliceStackViews.__dataclass_fields__}
    )
    off = {k: 0.0 for k in SliceStackViews.__dataclass_fields__ if k.endswith("_prob")}
    return replace(views, random_crop=False, **off)


@torch.inference_mode()
def _run_models(
    models: list[InjuryClassifier],
    cache: VolumeCache,
    items: pd.DataFrame,
    views: SliceStackViews,
    batch_size: int,
    num_workers: int,
    tta: bool | None,
    device: torch.device,
) -> pd.DataFrame:
    columns = ["patient_id", "series_id", *PREDICTION_COLUMNS]
    if items.empty:
        return pd.DataFrame(columns=columns)
    loader = DataLoader(
        CachedVolumeDataset(items, views), batch_size=batch_size, num_workers=num_workers
    )
    total = np.zeros((len(items), len(PREDICTION_COLUMNS)))
    for model in models:
        offset = 0
        for batch in loader:
            probs = model.predict_proba(batch["image"].to(device), tta=tta).float().cpu().numpy()
            total[offset : offset + len(probs)] += probs
            offset += len(probs)
    frame = pd.DataFrame(total / len(models), columns=list(PREDICTION_COLUMNS))
    frame.insert(0, "series_id", items["series_id"].to_numpy())
    frame.insert(0, "patient_id", items["patient_id"].to_numpy())
    return frame


def _submission(
    series: pd.DataFrame,
    patients: list[str],
    models: list[InjuryClassifier],
    aggregate: str,
    input_dir: Path,
) -> tuple[pd.DataFrame, list[str]]:
    per_patient = (
        aggregate_predictions(series.drop(columns="series_id"), aggregate) if len(series) else None
    )
    rows = (
        {}
        if per_patient is None
        else {str(r["patient_id"]): r for r in per_patient.to_dict("records")}
    )
    prevalence = _prevalence(models)
    fallback = [p for p in patients if p not in rows]
    for patient in fallback:
        log.warning(
            "patient %s has no readable series: predicting the training prevalence", patient
        )
        rows[patient] = {
            "patient_id": patient,
            **dict(zip(PREDICTION_COLUMNS, prevalence, strict=True)),
        }
    order = _submission_order(input_dir, patients)
    frame = pd.DataFrame([rows[p] for p in order])
    frame["patient_id"] = frame["patient_id"].astype(int)
    for target in TARGETS:
        cols = target_columns(target)
        group = frame[cols].to_numpy(dtype=float)
        frame[cols] = group / group.sum(axis=1, keepdims=True)
    return frame[["patient_id", *PREDICTION_COLUMNS]], fallback


def _prevalence(models: list[InjuryClassifier]) -> np.ndarray:
    values = [m.hparams.get("prevalence") for m in models if m.hparams.get("prevalence")]
    if not values:
        log.warning("checkpoints carry no training prevalence; the fallback is uniform per target")
        return np.concatenate(
            [np.full(len(target_columns(t)), 1 / len(target_columns(t))) for t in TARGETS]
        )
    return np.mean(np.asarray(values, dtype=float), axis=0)


def _submission_order(input_dir: Path, patients: list[str]) -> list[str]:
    """``sample_submission.csv``'s order when one sits beside the input, else sorted ids."""
    for candidate in (
        input_dir / "sample_submission.csv",
        input_dir.parent / "sample_submission.csv",
    ):
        if candidate.is_file():
            listed = [str(int(p)) for p in pd.read_csv(candidate)["patient_id"]]
            missing = [p for p in patients if p not in listed]
            return [p for p in listed if p in patients] + missing
    return sorted(patients, key=int)
