"""Write the evaluation of a fold: ``oof.csv``, ``metrics.json``/``metrics.md`` and plots.

Which weights are evaluated is chosen before, by the rule ``oof_from``
(:mod:`ctvoco.training.oof`); it is recorded in ``metrics.json``. :func:`log_evaluation`
sends the same evaluation to wandb, and its plots to TensorBoard, when they are loggers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctvoco.io.atomic import write_csv_atomic, write_text_atomic
from ctvoco.labels import SCORE_COLUMNS
from ctvoco.metrics.rsna import score_predictions
from ctvoco.reports.plots import plot_calibration, plot_confusion, plot_roc

log = logging.getLogger(__name__)


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
    """Send the evaluation written by :func:`write_evaluation` to the experiment loggers.

    A wandb logger gets the plots (``evaluation``), the metric table (``evaluation/metrics``:
    one row per metric) and ``oof.csv`` as a ``predictions`` artifact; a disabled wandb run
    (``WANDB_MODE=disabled``) is skipped and writes no wandb files. A TensorBoard logger gets
    each plot as an image (``evaluation/<plot>``, e.g. ``evaluation/roc``). Other loggers
    are skipped.

    Args:
        loggers: The trainer's loggers.
        directory: The run directory holding ``oof.csv`` and the plots.
        metrics: What :func:`write_evaluation` returned.
    """
    directory = Path(directory)
    for logger in loggers:
        if type(logger).__name__ == "TensorBoardLogger":
            _log_plots_to_tensorboard(logger.experiment, directory)
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


def _log_plots_to_tensorboard(writer: Any, directory: Path) -> None:
    """Every PNG of ``directory`` as a TensorBoard image ``evaluation/<name>``."""
    from PIL import Image

    for path in sorted(directory.glob("*.png")):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        writer.add_image(f"evaluation/{path.stem}", pixels, None, dataformats="HWC")
    flush = getattr(writer, "flush", None)
    if callable(flush):  # the evaluation runs after the fit, whose end closed the writer
        flush()


def _log_oof_artifact(run: Any, oof: Path) -> None:
    """``oof.csv`` as a wandb artifact named after the run."""
    if not oof.is_file():
        log.warning("wandb: %s not found, no predictions artifact logged", oof)
        return
    import wandb

    artifact = wandb.Artifact(f"oof-{run.id}", type="predictions")
    artifact.add_file(str(oof), name="oof.csv")
    run.log_artifact(artifact)
