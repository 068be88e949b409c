"""Write the evaluation of a fold: ``oof.csv``, ``metrics.json``/``metrics.md`` and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ctvoco.classify.module import score_predictions
from ctvoco.reports.plots import plot_calibration, plot_confusion, plot_roc
from ctvoco.schema import SCORE_COLUMNS


def write_evaluation(
    predictions: pd.DataFrame, labels: pd.DataFrame, directory: str | Path, checkpoint: str = ""
) -> dict[str, float]:
    """Score series-level predictions against labels and write the reports into ``directory``.

    Args:
        predictions: ``patient_id``, ``series_id`` and the 13 probability columns.
        labels: ``train.csv``-shaped labels (may cover more patients than predicted).
        directory: The run directory.
        checkpoint: Checkpoint the predictions came from (recorded in ``metrics.json``).

    Returns:
        The metrics (six losses, ``score``, ``auc_<target>``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labels = labels[labels["patient_id"].isin(predictions["patient_id"])]
    predictions.to_csv(directory / "oof.csv", index=False)
    metrics = score_predictions(labels, predictions)
    record = {
        "metrics": metrics,
        "checkpoint": checkpoint,
        "patients": int(labels["patient_id"].nunique()),
    }
    (directory / "metrics.json").write_text(json.dumps(record, indent=2))
    rows = [f"| {k} | {metrics[k]:.4f} |" for k in (*SCORE_COLUMNS, "score")]
    aucs = [f"| auc_{k} | {metrics[f'auc_{k}']:.4f} |" for k in SCORE_COLUMNS]
    (directory / "metrics.md").write_text(
        "| metric | value |\n|---|---|\n" + "\n".join(rows + aucs) + "\n"
    )
    plot_roc(labels, predictions, directory / "roc.png")
    plot_confusion(labels, predictions, directory / "confusion.png")
    plot_calibration(labels, predictions, directory / "calibration.png")
    return metrics
