"""Predict a submission from CT series with one or more trained classifiers.

:func:`predict_submission` reads a DICOM tree in the competition's ``test_images`` layout
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

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ctvoco.classify.module import InjuryClassifier
from ctvoco.classify.scaling import apply_scaling, format_factors, read_scaling_json
from ctvoco.classify.views import SliceStackViews
from ctvoco.data.dataset import CachedVolumeDataset
from ctvoco.errors import UserError
from ctvoco.inference.cache import prepare_input
from ctvoco.inference.checkpoints import LoadedClassifier, load_for_prediction
from ctvoco.inference.submission import patient_rows, submission_order, write_outputs
from ctvoco.inference.writable import check_output
from ctvoco.labels import PREDICTION_COLUMNS

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
    loaded = [load_for_prediction(p, dev) for p in checkpoints]
    factors = _scaling_factors(scaling, loaded)
    _check_same_preprocessing(loaded)
    input_dir = Path(input_dir)
    prepared = prepare_input(input_dir, output, cache_dir, loaded[0].spec, preprocess_workers)
    order = submission_order(input_dir, prepared.patients)  # a bad sample_submission fails early
    models = [c.model for c in loaded]
    views = [c.spec.views for c in loaded]
    series = _run_models(models, prepared.items, views, batch_size, num_workers, tta)
    submission, fallback = patient_rows(
        series, order, [c.spec for c in loaded], aggregate, set(prepared.patients)
    )
    if factors is not None:
        predicted = ~submission["patient_id"].astype(str).isin(fallback)
        submission.loc[predicted] = apply_scaling(submission.loc[predicted], factors)
    write_outputs(output, submission, series, prepared.failed)
    return Prediction(submission, series, prepared.failed, fallback, factors)


def _check_same_preprocessing(loaded: Sequence[LoadedClassifier]) -> None:
    """Refuse an ensemble whose checkpoints were trained on differently preprocessed data.

    Raises:
        UserError: Naming the first checkpoint and the one that differs.
    """
    first = loaded[0]
    for other in loaded[1:]:
        if not other.spec.same_preprocessing(first.spec):
            raise UserError(
                f"checkpoints {first.path} and {other.path} were trained on differently "
                "preprocessed data; ensemble them separately"
            )


def _scaling_factors(
    scaling: str | os.PathLike[str] | bool | None, loaded: Sequence[LoadedClassifier]
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
    stored = [c.scaling for c in loaded]
    if all(s is None for s in stored):
        return None
    first = None if stored[0] is None else stored[0][0]
    for classifier, entry in zip(loaded, stored, strict=True):
        factors = None if entry is None else entry[0]
        if factors != first:
            raise UserError(
                f"the checkpoints carry different probability scaling ({loaded[0].path}: "
                f"{_described_factors(first)}; {classifier.path}: "
                f"{_described_factors(factors)}); pass scaling=<scaling.json> to use one set "
                "for the ensemble, or scaling=false"
            )
    assert first is not None and stored[0] is not None
    log.info(
        "probability scaling stored in %s (fitted in %s): %s",
        loaded[0].path if len(loaded) == 1 else f"the {len(loaded)} checkpoints",
        stored[0][1] or "an unrecorded place",
        format_factors(first),
    )
    return first


def _described_factors(factors: dict[str, float] | None) -> str:
    """The factors for a message, or ``none``."""
    return "none" if factors is None else format_factors(factors)


@torch.inference_mode()
def _run_models(
    models: list[InjuryClassifier],
    items: pd.DataFrame,
    views: list[SliceStackViews],
    batch_size: int,
    num_workers: int,
    tta: bool | None,
) -> pd.DataFrame:
    """Series-level probabilities averaged over the models, shape ``(len(items), 2 + 13)``.

    ``views[i]`` are the evaluation views model ``i`` was trained with (its own slices and
    crop); models sharing views share one pass over the data. Every batch goes through
    :meth:`InjuryClassifier.predict_step` of every model.
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
        for index, batch in enumerate(loader):
            batch = {**batch, "image": batch["image"].to(group[0].device)}  # once per group
            for model in group:
                probs = model.predict_step(batch, index, tta=tta)["probs"].numpy()
                total[offset : offset + len(probs)] += probs
            offset += len(batch["key"])
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
