"""Predict a submission from CT series with one or more trained classifiers.

``predict_submission`` reads a DICOM tree in the competition's ``test_images`` layout
(``<patient_id>/<series_id>/*.dcm``) or an existing volume cache, preprocesses what is
needed exactly as the models were trained, runs every checkpoint on its own input views
(the slices and crop it was trained with; test-time flips), averages the checkpoints,
aggregates series per patient and writes a valid submission:
every patient once, each target's probabilities summing to 1. A series that cannot be read
is reported; its patient is predicted from its other series or, failing that, from the
training prevalence, with a warning — never a missing row. A patient that
``sample_submission.csv`` lists but the input has no images of gets the training
prevalence too, with a warning. Every file is written atomically, and where it goes is
checked before any series is read.
"""

from __future__ import annotations

import errno
import logging
import os
import re
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
from ctvoco.classify.scaling import (
    apply_scaling,
    checkpoint_scaling,
    format_factors,
    read_scaling_json,
)
from ctvoco.classify.views import SliceStackViews
from ctvoco.data.dataset import CachedVolumeDataset
from ctvoco.data.rsna import is_id, parse_id
from ctvoco.errors import DataError, UserError
from ctvoco.io.atomic import atomic_write
from ctvoco.metrics.rsna import aggregate_predictions
from ctvoco.models.checkpoints import CheckpointError, read_lightning_checkpoint
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
    scaling: dict[str, float] | None = None
    """The probability-scaling factors applied to the submission (``None``: none)."""


def load_classifier(path: str | os.PathLike[str], device: torch.device) -> InjuryClassifier:
    """A trained classifier from its checkpoint (read as data, weights only).

    Raises:
        UserError: No such file.
        DataError: See :func:`load_classifier_and_scaling`.
    """
    return load_classifier_and_scaling(path, device)[0]


def load_classifier_and_scaling(
    path: str | os.PathLike[str], device: torch.device
) -> tuple[InjuryClassifier, tuple[dict[str, float], str] | None]:
    """A trained classifier and the probability-scaling factors its checkpoint carries.

    Returns:
        The model in evaluation mode on ``device``, and its checkpoint's factors with
        where they were fitted (:data:`ctvoco.classify.scaling.CHECKPOINT_KEY`); ``None``
        without any.

    Raises:
        UserError: No such file.
        DataError: One sentence naming the file: truncated or corrupt, pickled Python
            objects (refused, never run), not a classifier checkpoint of ``ctvoco-finetune``,
            weights that do not fit, or no recorded preprocessing.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint={path}: no such file")
    try:
        raw = read_lightning_checkpoint(path, module="InjuryClassifier")
    except CheckpointError as exc:
        raise DataError(_checkpoint_problem(exc)) from exc
    if not (raw.get("hyper_parameters") or {}).get("data_config"):
        raise DataError(f"{path}: the checkpoint does not record its preprocessing (data_config)")
    try:
        model = InjuryClassifier.load_from_checkpoint(
            path, map_location="cpu", weights_only=True, init="random", weights_dir=None
        )
    except RuntimeError as exc:  # the state dict does not fit the module
        raise DataError(
            f"{path}: its weights do not fit the InjuryClassifier its hyper-parameters "
            f"describe ({_state_dict_mismatch(str(exc))})"
        ) from exc
    except (TypeError, ValueError, UserError) as exc:  # hyper-parameters of another version
        raise DataError(
            f"{path}: the InjuryClassifier cannot be rebuilt from its hyper-parameters "
            f"({type(exc).__name__}: {_first_line(str(exc))})"
        ) from exc
    return model.to(device).eval(), checkpoint_scaling(raw, path)


def _checkpoint_problem(exc: CheckpointError) -> str:
    """The message for an unusable checkpoint, saying what ctvoco-predict needs."""
    needs = "ctvoco-predict needs one written by ctvoco-finetune (<run>/checkpoints/*.ckpt)"
    if exc.reason == "not_lightning":
        return f"{exc.path}: not an InjuryClassifier checkpoint: {exc.problem}; {needs}"
    if exc.reason == "other_program":
        return f"{exc}; {needs}"
    return str(exc)


def _state_dict_mismatch(text: str) -> str:
    """Counts and first examples of the missing, unexpected and resized keys in torch's
    ``load_state_dict`` error."""
    parts = []
    for label, marker in (
        ("missing", "Missing key(s)"),
        ("unexpected", "Unexpected key(s)"),
        ("with another shape", "size mismatch"),
    ):
        lines = [line for line in text.splitlines() if marker in line]
        keys = [key for line in lines for key in re.findall(r'"([^"]+)"', line)]
        if marker == "size mismatch":
            keys = [m for line in lines for m in re.findall(r"for ([\w.]+):", line)]
        if keys:
            parts.append(f"{len(keys)} {label}, e.g. {keys[0]}")
    return "; ".join(parts) or _first_line(text)


def _first_line(text: str, limit: int = 200) -> str:
    """The first line of ``text``, at most ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def discover_input(input_dir: Path) -> tuple[list[SeriesSource], list[str]]:
    """Series and patients of a ``test_images``-style tree (or its parent folder)."""
    folder = input_dir / "test_images" if (input_dir / "test_images").is_dir() else input_dir
    if not folder.is_dir():
        raise UserError(f"input={input_dir}: no such directory")
    patients, sources = [], []
    for patient_dir in _subfolders(folder, what="input folder"):
        if not is_id(patient_dir.name):
            log.warning("%s: not an integer patient id, skipped", patient_dir)
            continue
        patients.append(patient_dir.name)
        try:
            series_dirs = _subfolders(patient_dir, what="patient folder")
        except UserError as exc:
            log.warning("%s; the patient gets the fallback prediction", exc)
            continue
        for series_dir in series_dirs:
            if not is_id(series_dir.name):
                log.warning("%s: not an integer series id, skipped", series_dir)
                continue
            pid, sid = int(patient_dir.name), int(series_dir.name)
            sources.append(SeriesSource(f"{pid}_{sid}", str(series_dir), str(pid), str(sid)))
    if not patients:
        raise UserError(f"input={input_dir}: expected <patient_id>/<series_id>/*.dcm folders")
    return sources, [str(int(p)) for p in patients]


def _subfolders(folder: Path, *, what: str) -> list[Path]:
    """The visible sub-folders of ``folder``, sorted.

    Raises:
        UserError: ``folder`` cannot be listed (naming it and the reason).
    """
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise UserError(f"{folder}: cannot list the {what} ({exc.strerror or exc})") from exc


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
    scaling: str | os.PathLike[str] | bool | None = None,
) -> Prediction:
    """Write ``output`` (submission CSV) for every patient under ``input_dir``.

    Args:
        checkpoints: One or more classifier checkpoints (ensembled by averaging). They
            must share their preprocessing; each sees the slices and crop it was trained on.
        input_dir: ``test_images`` tree (or its parent), or an existing volume cache.
        output: Submission CSV path.
        cache_dir: Where to cache preprocessed series (default: beside ``output``).
        batch_size: Series per forward pass.
        num_workers: DataLoader workers.
        preprocess_workers: Processes for preprocessing.
        tta: Test-time flips (default: what each model was trained with).
        aggregate: Per-patient aggregation of series, ``max`` or ``mean``.
        device: ``auto``, ``cpu``, ``cuda``...
        scaling: Per-target probability scaling of the submission: a ``scaling.json``
            (``ctvoco-cv-report --fit-scaling``), ``False`` for none, or ``None`` for the
            factors stored in the checkpoints (none when they carry none). The factors
            scale each model-predicted patient row after the series are aggregated;
            ``series_predictions.csv`` and the training-prevalence fallback stay unscaled.

    Returns:
        The submission, the series-level predictions, what failed and the factors applied.
    """
    if not checkpoints:
        raise UserError("checkpoint= is required (one path or a list)")
    output = Path(output)
    check_output(output)  # before any work: the results must have somewhere to go
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    loaded = [load_classifier_and_scaling(p, dev) for p in checkpoints]
    models = [model for model, _ in loaded]
    factors = _scaling_factors(scaling, checkpoints, [f for _, f in loaded])
    data_config = models[0].hparams.data_config
    for path, model in zip(checkpoints[1:], models[1:], strict=True):
        if model.hparams.data_config["preprocess"] != data_config["preprocess"]:
            raise UserError(
                f"checkpoints {checkpoints[0]} and {path} were trained on differently "
                "preprocessed data; ensemble them separately"
            )
    input_dir = Path(input_dir)
    cache, items, patients, failed = _prepare_cache(
        input_dir, output, cache_dir, data_config, preprocess_workers
    )
    order = _submission_order(input_dir, patients)  # a bad sample_submission fails early
    views = [_eval_views(m.hparams.data_config.get("views", {})) for m in models]
    series = _run_models(models, cache, items, views, batch_size, num_workers, tta, dev)
    submission, fallback = _submission(series, order, models, aggregate, set(patients))
    if factors is not None:
        predicted = ~submission["patient_id"].astype(str).isin(fallback)
        submission.loc[predicted] = apply_scaling(submission.loc[predicted], factors)
    _write_outputs(output, submission, series, failed)
    return Prediction(submission, series, failed, fallback, factors)


def _scaling_factors(
    scaling: str | os.PathLike[str] | bool | None,
    checkpoints: Sequence[str | os.PathLike[str]],
    stored: Sequence[tuple[dict[str, float], str] | None],
) -> dict[str, float] | None:
    """The factors to apply, from ``scaling=`` or the checkpoints; logs which and whence.

    Raises:
        UserError: The checkpoints of an ensemble carry different factors (or only some
            carry any) and ``scaling=`` does not say which to use.
        DataError: The ``scaling.json`` cannot be read.
    """
    if scaling is False:
        log.info("probability scaling: off (scaling=false)")
        return None
    if scaling is not None and scaling is not True:
        factors = read_scaling_json(scaling)
        log.info("probability scaling from %s: %s", scaling, format_factors(factors))
        return factors
    if all(s is None for s in stored):
        return None
    first = None if stored[0] is None else stored[0][0]
    for path, entry in zip(checkpoints, stored, strict=True):
        factors = None if entry is None else entry[0]
        if factors != first:
            raise UserError(
                f"the checkpoints carry different probability scaling ({checkpoints[0]}: "
                f"{_described_factors(first)}; {path}: {_described_factors(factors)}); pass "
                "scaling=<scaling.json> to use one set for the ensemble, or scaling=false"
            )
    assert first is not None and stored[0] is not None
    log.info(
        "probability scaling stored in %s (fitted in %s): %s",
        checkpoints[0] if len(checkpoints) == 1 else f"the {len(checkpoints)} checkpoints",
        stored[0][1] or "an unrecorded place",
        format_factors(first),
    )
    return first


def _described_factors(factors: dict[str, float] | None) -> str:
    """The factors for a message, or ``none``."""
    return "none" if factors is None else format_factors(factors)


def check_output(output: Path) -> None:
    """Fail now, not after inference, when the submission cannot be written to ``output``.

    Raises:
        UserError: ``output`` is a directory, or its directory cannot be created or
            written (a file in the way, no permission, a full disk).
    """
    if output.is_dir():
        raise UserError(
            f"output={output} is a directory; name the submission file, e.g. "
            f"output={output / 'submission.csv'}"
        )
    check_writable_dir(output.parent, f"output={output}", "output", "a file")


def check_writable_dir(directory: Path, setting: str, key: str, where: str = "a directory") -> None:
    """Create ``directory`` if needed and check that a file can be written in it.

    A few bytes are written, flushed to the disk and removed again (an empty file could be
    created even on a full disk).

    Args:
        directory: Where the program will write.
        setting: ``key=value`` that chose it, how the message starts.
        key: The config key to change, named in the advice.
        where: What ``key`` names: ``a directory`` or ``a file``.

    Raises:
        UserError: Naming ``setting``, the directory and the cause.
    """
    blocker = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UserError(
            f"{setting}: cannot write to {directory}: {blocker} is not a directory; "
            f"{_write_advice(None, key, where)}"
        )
    probe = directory / f".write-test-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ctvoco write test\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(
            f"{setting}: cannot write to {directory} ({exc.strerror or exc}); "
            f"{_write_advice(exc, key, where)}"
        ) from exc


def _write_advice(exc: OSError | None, key: str, where: str = "a directory") -> str:
    """What to do about a failed write, naming the config key that picks the place.

    ``where`` is what the key names: ``a directory`` or ``a file``.
    """
    if exc is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free some space there or set {key}= to {where} on another disk"
    if where == "a directory":
        return f"set {key}= to a writable directory"
    return f"set {key}= to {where} in a writable directory"


def _write_outputs(
    out: Path, submission: pd.DataFrame, series: pd.DataFrame, failed: list[dict[str, Any]]
) -> None:
    """The submission, ``series_predictions.csv`` and ``failed_series.csv``, each atomically.

    ``failed_series.csv`` lists this run's unusable series; a run without any removes the
    file an earlier run may have left.

    Raises:
        UserError: A file cannot be written (e.g. the disk is full); no partial file is
            left under its name.
    """
    failed_csv = out.with_name("failed_series.csv")
    tables = [(out, submission), (out.with_name("series_predictions.csv"), series)]
    if failed:
        tables.append((failed_csv, pd.DataFrame(failed)))
    for path, table in tables:
        try:
            with atomic_write(path, "w") as handle:
                table.to_csv(handle, index=False)
        except OSError as exc:
            raise UserError(
                f"cannot write {path} ({exc.strerror or exc}); "
                f"{_write_advice(exc, 'output', 'a file')}"
            ) from exc
    if not failed:
        failed_csv.unlink(missing_ok=True)


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
        try:
            cache.ensure_variant(config)
        except UserError as exc:
            raise UserError(
                f"input={input_dir}: {str(exc).split('; ')[0]}, not with the checkpoints' "
                "preprocessing; give the DICOM tree as input= (cache_dir= a new directory)"
            ) from exc
        manifest = cache.manifest()
        patients = sorted({str(p) for p in manifest["patient_id"]}, key=int)
        failed = manifest[manifest["status"] != "ok"].to_dict("records")
    else:
        sources, patients = discover_input(input_dir)
        root = Path(cache_dir) if cache_dir else Path(output).parent / "cache"
        check_writable_dir(root, f"cache_dir={root}", "cache_dir")
        cache = VolumeCache(root)
        try:
            summary = build_cache(sources, cache, config, num_workers=workers)
        except UserError as exc:
            # The cache's advice names the training programs' key; this program's is cache_dir.
            raise UserError(str(exc).replace("data.cache_dir", "cache_dir")) from exc
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
    views: list[SliceStackViews],
    batch_size: int,
    num_workers: int,
    tta: bool | None,
    device: torch.device,
) -> pd.DataFrame:
    """Series-level probabilities averaged over the models, shape ``(len(items), 2 + 13)``.

    ``views[i]`` are the evaluation views model ``i`` was trained with (its own slices and
    crop); models sharing views share one pass over the data.
    """
    columns = ["patient_id", "series_id", *PREDICTION_COLUMNS]
    if items.empty:
        return pd.DataFrame(columns=columns)
    total = np.zeros((len(items), len(PREDICTION_COLUMNS)))
    for view, group in _by_views(models, views).items():
        loader = DataLoader(
            CachedVolumeDataset(items, view), batch_size=batch_size, num_workers=num_workers
        )
        offset = 0
        for batch in loader:
            image = batch["image"].to(device)
            for model in group:
                probs = model.predict_proba(image, tta=tta).float().cpu().numpy()
                total[offset : offset + len(probs)] += probs
            offset += len(image)
    frame = pd.DataFrame(total / len(models), columns=list(PREDICTION_COLUMNS))
    frame.insert(0, "series_id", items["series_id"].to_numpy())
    frame.insert(0, "patient_id", items["patient_id"].to_numpy())
    return frame


def _by_views(
    models: list[InjuryClassifier], views: list[SliceStackViews]
) -> dict[SliceStackViews, list[InjuryClassifier]]:
    """The models grouped by their input views, in first-seen order."""
    groups: dict[SliceStackViews, list[InjuryClassifier]] = {}
    for model, view in zip(models, views, strict=True):
        groups.setdefault(view, []).append(model)
    return groups


def _submission(
    series: pd.DataFrame,
    order: list[str],
    models: list[InjuryClassifier],
    aggregate: str,
    known: set[str],
) -> tuple[pd.DataFrame, list[str]]:
    """One row per patient of ``order`` (in that order), groups normalised; and the patients
    predicted from the training prevalence.

    ``known`` are the patients of the input; the others (listed only in
    ``sample_submission.csv``) were warned about already."""
    per_patient = (
        aggregate_predictions(series.drop(columns="series_id"), aggregate) if len(series) else None
    )
    rows = (
        {}
        if per_patient is None
        else {str(r["patient_id"]): r for r in per_patient.to_dict("records")}
    )
    prevalence = _prevalence(models)
    fallback = [p for p in order if p not in rows]
    for patient in fallback:
        if patient in known:
            log.warning(
                "patient %s has no readable series: predicting the training prevalence", patient
            )
        rows[patient] = {
            "patient_id": patient,
            **dict(zip(PREDICTION_COLUMNS, prevalence, strict=True)),
        }
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
    """``sample_submission.csv``'s order when one sits beside the input, else sorted ids.

    Every listed patient keeps its row, also one the input has no images of (it is predicted
    from the training prevalence, with a warning); patients of the input that the file does
    not list follow, in the input's order.
    """
    for candidate in (
        input_dir / "sample_submission.csv",
        input_dir.parent / "sample_submission.csv",
    ):
        if candidate.is_file():
            listed = list(dict.fromkeys(_listed_patients(candidate)))
            known, seen = set(patients), set(listed)
            for patient in (p for p in listed if p not in known):
                log.warning(
                    "patient %s is listed in %s but %s has no image folder for it: predicting "
                    "the training prevalence",
                    patient,
                    candidate,
                    input_dir,
                )
            return listed + [p for p in patients if p not in seen]
    return sorted(patients, key=int)


def _listed_patients(path: Path) -> list[str]:
    """The patient ids of a ``sample_submission.csv``, as canonical integer strings."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    if "patient_id" not in frame.columns:
        raise DataError(f"{path}: no patient_id column")
    # row numbers as a spreadsheet shows them: the header is row 1
    return [
        str(parse_id(value, "patient_id", f"{path} row {row}"))
        for row, value in enumerate(frame["patient_id"], start=2)
    ]
