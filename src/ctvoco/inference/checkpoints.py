"""Trained classifiers for prediction, read from their checkpoints as data (weights only).

Every problem with a checkpoint is one sentence naming the file: truncated or corrupt,
pickled Python objects (refused, never run), not a classifier checkpoint of
``ctvoco-finetune``, weights that do not fit, or no recorded inference spec.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ctvoco.classify.module import InjuryClassifier
from ctvoco.classify.scaling import checkpoint_scaling
from ctvoco.classify.spec import InferenceSpec
from ctvoco.errors import DataError, UserError
from ctvoco.models.checkpoints import CheckpointError, read_lightning_checkpoint


@dataclass
class LoadedClassifier:
    """A classifier ready to predict, with what its checkpoint says about it.

    Attributes:
        path: The checkpoint.
        model: The model, in evaluation mode on the requested device.
        spec: How its inputs are made and the training prevalence.
        scaling: The probability-scaling factors the checkpoint carries and where they were
            fitted (:data:`ctvoco.classify.scaling.CHECKPOINT_KEY`); ``None`` without any.
    """

    path: Path
    model: InjuryClassifier
    spec: InferenceSpec
    scaling: tuple[dict[str, float], str] | None


def load_classifier(path: str | os.PathLike[str], device: torch.device) -> InjuryClassifier:
    """A trained classifier from its checkpoint (read as data, weights only).

    Raises:
        UserError: No such file.
        DataError: See :func:`load_for_prediction`.
    """
    return load_for_prediction(path, device).model


def load_for_prediction(path: str | os.PathLike[str], device: torch.device) -> LoadedClassifier:
    """A trained classifier, its inference spec and its probability-scaling factors.

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
    spec = InferenceSpec.from_checkpoint(raw, path)
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
    model.inference = spec
    return LoadedClassifier(path, model.to(device).eval(), spec, checkpoint_scaling(raw, path))


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
