"""Write the evaluation of a fold: ``oof.csv``, ``metrics.json``/``metrics.md`` and plots.

Which weights a fold is evaluated with is the rule ``oof_from`` (:func:`parse_oof_rule`):

- ``best``: the checkpoint selected on the fold's own validation score (optimistic: the
  fold both chooses and scores the weights);
- ``last``: the final weights of the run;
- ``step:N`` / ``epoch:N``: the weights after optimiser step ``N`` / at the end of epoch
  ``N``, saved during training by :class:`FixedPointCheckpoint`.

:func:`log_evaluation` sends the same evaluation to wandb when it is one of the loggers.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping

from ctvoco.classify.module import score_predictions
from ctvoco.errors import UserError
from ctvoco.io.atomic import write_csv_atomic, write_text_atomic
from ctvoco.reports.plots import plot_calibration, plot_confusion, plot_roc
from ctvoco.schema import SCORE_COLUMNS

log = logging.getLogger(__name__)

OOF_RULES = "best, last, step:N or epoch:N"
"""The values ``oof_from`` takes, for messages."""

_FIXED_RULE = re.compile(r"(step|epoch):([0-9]+)")


@dataclass(frozen=True)
class OOFRule:
    """Which weights evaluate a fold: ``kind`` ``best``, ``last``, ``step`` or ``epoch``
    (with ``at``, the step or the 1-based epoch)."""

    kind: str
    at: int | None = None

    def __str__(self) -> str:
        return self.kind if self.at is None else f"{self.kind}:{self.at}"


def parse_oof_rule(value: Any) -> OOFRule:
    """``oof_from`` as an :class:`OOFRule`.

    Raises:
        UserError: Naming ``oof_from`` and the values it takes.
    """
    text = str(value).strip() if isinstance(value, str) else None
    if text in ("best", "last"):
        return OOFRule(text)
    match = _FIXED_RULE.fullmatch(text or "")
    if match is None or int(match.group(2)) < 1:
        raise UserError(
            f"oof_from={value} is not a rule; oof_from must be {OOF_RULES} (N >= 1): the "
            "weights the fold's out-of-fold predictions come from"
        )
    return OOFRule(match.group(1), int(match.group(2)))


def check_reachable(rule: OOFRule, trainer: Mapping[str, Any]) -> None:
    """Refuse, before training, a ``step:N`` / ``epoch:N`` the trainer settings never reach.

    Args:
        rule: The parsed ``oof_from``.
        trainer: The ``trainer`` config section (``max_steps``, ``max_epochs``).

    Raises:
        UserError: Naming ``oof_from`` and the trainer key that ends training sooner.
    """
    key = {"step": "max_steps", "epoch": "max_epochs"}.get(rule.kind)
    if key is None or rule.at is None:
        return
    limit = trainer.get(key)
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < rule.at:
        raise UserError(
            f"oof_from={rule}: training ends before that (trainer.{key}={limit}); choose a "
            f"{rule.kind} up to {limit}, or raise trainer.{key}"
        )


class FixedPointCheckpoint(pl.Callback):
    """Save the checkpoint a ``step:N`` or ``epoch:N`` rule evaluates, when training gets there.

    ``<dirpath>/oof-step<N:07d>.ckpt`` is written right after optimiser step ``N``,
    ``<dirpath>/oof-epoch<N:03d>.ckpt`` at the end of epoch ``N`` (1-based); another rule
    writes nothing.

    Args:
        rule: The parsed ``oof_from``.
        dirpath: The run's checkpoint directory.
    """

    def __init__(self, rule: OOFRule, dirpath: str | Path) -> None:
        self.rule = rule
        self.dirpath = Path(dirpath)
        self._saved_step: int | None = None

    @property
    def path(self) -> Path | None:
        """Where the rule's checkpoint goes (``None`` for ``best`` and ``last``)."""
        if self.rule.kind == "step":
            return self.dirpath / f"oof-step{self.rule.at:07d}.ckpt"
        if self.rule.kind == "epoch":
            return self.dirpath / f"oof-epoch{self.rule.at:03d}.ckpt"
        return None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.rule.kind == "step" and trainer.global_step == self.rule.at:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rule.kind == "epoch" and trainer.current_epoch + 1 == self.rule.at:
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        """Write the checkpoint once (gradient accumulation repeats a global step)."""
        path = self.path
        if path is None or self._saved_step == trainer.global_step:
            return
        trainer.save_checkpoint(path)
        self._saved_step = trainer.global_step


@dataclass(frozen=True)
class EvaluationWeights:
    """The weights a fold is evaluated with.

    Attributes:
        rule: The rule that chose them (``last`` where ``best`` had no checkpoint).
        ckpt_path: The checkpoint to validate with; ``None``: the weights in memory (final).
        checkpoint: The file holding those weights, recorded in ``metrics.json`` (``""``
            when none holds exactly them).
        step: Their optimiser step (``None`` for ``best``).
        selected_on_fold: Whether the fold's own validation patients chose them (``best``,
            or ``last`` with early stopping).
    """

    rule: OOFRule
    ckpt_path: str | None
    checkpoint: str
    step: int | None
    selected_on_fold: bool


def evaluation_weights(
    rule: OOFRule, trainer: pl.Trainer, fixed: FixedPointCheckpoint | None = None
) -> EvaluationWeights:
    """Which weights evaluate the fold after ``trainer.fit``, by ``rule``.

    Args:
        rule: The parsed ``oof_from``.
        trainer: The trainer after ``fit``.
        fixed: The run's :class:`FixedPointCheckpoint` (for ``step:N`` / ``epoch:N``).

    Raises:
        UserError: Training ended before a ``step:N`` / ``epoch:N`` rule's point.
    """
    callback = trainer.checkpoint_callback
    early = any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    if rule.kind == "best":
        best = getattr(callback, "best_model_path", "") or ""
        if best:
            return EvaluationWeights(rule, best, best, None, True)
        log.warning("oof_from=best, but no best checkpoint was saved: evaluating the final weights")
        rule = OOFRule("last")
    if rule.kind == "last":
        last = getattr(callback, "last_model_path", "") or ""
        current = getattr(callback, "_last_global_step_saved", None) == trainer.global_step
        recorded = last if last and current and Path(last).is_file() else ""
        return EvaluationWeights(rule, None, recorded, trainer.global_step, early)
    path = fixed.path if fixed is not None and fixed.rule == rule else None
    if path is None or not path.is_file():
        raise UserError(
            f"oof_from={rule}: training ended at step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}) before it got there, so the fold has no weights to "
            "evaluate; choose an earlier point or train longer"
        )
    import torch

    step = int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    return EvaluationWeights(rule, str(path), str(path), step, False)


def write_evaluation(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    directory: str | Path,
    checkpoint: str = "",
    *,
    oof_from: str | None = None,
    oof_step: int | None = None,
    selected_on_fold: bool | None = None,
) -> dict[str, float]:
    """Score series-level predictions against labels and write the reports into ``directory``.

    Args:
        predictions: ``patient_id``, ``series_id`` and the 13 probability columns.
        labels: ``train.csv``-shaped labels (may cover more patients than predicted).
        directory: The run directory.
        checkpoint: Checkpoint the predictions came from (recorded in ``metrics.json``).
        oof_from: The rule that chose the weights (``best``, ``last``, ``step:N``,
            ``epoch:N``), recorded in ``metrics.json`` for ``ctvoco-cv-report``.
        oof_step: The optimiser step of those weights.
        selected_on_fold: Whether the fold's own validation patients chose them.

    Returns:
        The metrics (six losses, ``score``, ``auc_<target>``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labels = labels[labels["patient_id"].isin(predictions["patient_id"])]
    write_csv_atomic(directory / "oof.csv", predictions, index=False)
    metrics = score_predictions(labels, predictions)
    record = {
        "metrics": metrics,
        "checkpoint": checkpoint,
        "oof_from": oof_from,
        "oof_step": oof_step,
        "selected_on_fold": selected_on_fold,
        "patients": int(labels["patient_id"].nunique()),
    }
    write_text_atomic(directory / "metrics.json", json.dumps(record, indent=2))
    rows = [f"| {k} | {metrics[k]:.4f} |" for k in (*SCORE_COLUMNS, "score")]
    aucs = [f"| auc_{k} | {metrics[f'auc_{k}']:.4f} |" for k in SCORE_COLUMNS]
    write_text_atomic(
        directory / "metrics.md",
        "| metric | value |\n|---|---|\n" + "\n".join(rows + aucs) + "\n",
    )
    plot_roc(labels, predictions, directory / "roc.png")
    plot_confusion(labels, predictions, directory / "confusion.png")
    plot_calibration(labels, predictions, directory / "calibration.png")
    return metrics


def log_evaluation(
    loggers: Iterable[Any], directory: str | Path, metrics: Mapping[str, float]
) -> None:
    """Send the evaluation written by :func:`write_evaluation` to every wandb logger.

    Logs the plots (``evaluation``), the metric table (``evaluation/metrics``: one row per
    metric) and ``oof.csv`` as a ``predictions`` artifact. Other loggers are skipped, and so
    is a disabled wandb run (``WANDB_MODE=disabled``), which then writes no wandb files.

    Args:
        loggers: The trainer's loggers.
        directory: The run directory holding ``oof.csv`` and the plots.
        metrics: What :func:`write_evaluation` returned.
    """
    directory = Path(directory)
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        run = logger.experiment
        if getattr(run, "disabled", False):
            continue
        images = sorted(str(p) for p in directory.glob("*.png"))
        if images:
            logger.log_image(
                key="evaluation", images=images, caption=[Path(p).stem for p in images]
            )
        logger.log_table(
            key="evaluation/metrics",
            columns=["metric", "value"],
            data=[[name, float(value)] for name, value in metrics.items()],
        )
        _log_oof_artifact(run, directory / "oof.csv")


def _log_oof_artifact(run: Any, oof: Path) -> None:
    """``oof.csv`` as a wandb artifact named after the run."""
    if not oof.is_file():
        log.warning("wandb: %s not found, no predictions artifact logged", oof)
        return
    import wandb

    artifact = wandb.Artifact(f"oof-{run.id}", type="predictions")
    artifact.add_file(str(oof), name="oof.csv")
    run.log_artifact(artifact)
