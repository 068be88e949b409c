"""The pages of the cross-validation report: ``cv_report.md`` and its plots.

:mod:`ctvoco.reports.cross_validation` computes the report (the fold table, the pooled
score with its interval and floors, the rules of the folds); this module renders it: the
Markdown table of the folds (:func:`to_markdown`), the whole ``cv_report.md``
(:func:`render_markdown`), the notes on each fold's rule (:func:`rule_lines`) and the ROC
and reliability plots of the pooled predictions (:func:`write_plots`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ctvoco.labels import SCORE_COLUMNS
from ctvoco.reports.cross_validation import PooledSummary, selected_on_fold

ROC_PNG = "cv_roc.png"
CALIBRATION_PNG = "cv_calibration.png"
"""The plots of the pooled out-of-fold predictions, written beside ``cv_report.md``."""

PLOT_TITLES = {
    ROC_PNG: "ROC curve per target",
    CALIBRATION_PNG: "Reliability diagram per target",
}
"""The alternative text of each plot in ``cv_report.md``."""


def write_plots(labels: pd.DataFrame, predictions: pd.DataFrame, directory: Path) -> list[Path]:
    """ROC curves per target and the reliability diagram of the pooled predictions.

    Returns:
        ``directory/cv_roc.png`` and ``directory/cv_calibration.png`` (written atomically).
    """
    from ctvoco.reports.plots import plot_calibration, plot_roc

    scored = labels[labels["patient_id"].isin(predictions["patient_id"])]
    return [
        plot_roc(scored, predictions, directory / ROC_PNG),
        plot_calibration(scored, predictions, directory / CALIBRATION_PNG),
    ]


TABLE_COLUMNS = (
    "fold",
    "run",
    "patients",
    "score",
    *SCORE_COLUMNS,
    *(f"auc_{k}" for k in SCORE_COLUMNS),
)
"""The columns of the Markdown table: losses are the competition's weighted log losses."""


def _cell(value: Any) -> str:
    """A number with 4 decimals; ``n/a`` for NaN (an AUC of a single-class target)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def _table_row(row: pd.Series) -> list[str]:
    """The cells of one report row: fold id (or the summary name), run folder, metrics."""
    summary = row["run"] in ("mean", "std", "pooled")
    if summary:
        fold, run = str(row["run"]), ""
    else:
        fold = "?" if pd.isna(row["fold"]) else str(int(row["fold"]))
        run = Path(str(row["run"])).name
    patients = "" if pd.isna(row["patients"]) else str(int(row["patients"]))
    return [fold, run, patients, *(_cell(row[c]) for c in TABLE_COLUMNS[3:])]


def to_markdown(report: pd.DataFrame) -> str:
    """The report as a Markdown table: fold, run, patients, score, losses, AUCs (4 decimals)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for _, row in report.iterrows():
        lines.append("| " + " | ".join(_table_row(row)) + " |")
    return "\n".join(lines) + "\n"


def _score_lines(pooled: PooledSummary) -> list[str]:
    """The Markdown score table: the pooled score with its interval, then its floors."""
    if pooled.interval is None:
        interval = "not computed"
    else:
        interval = f"{pooled.interval[0]:.4f} to {pooled.interval[1]:.4f}"
    percent = f"{pooled.level * 100:g} %"
    return [
        f"| | score | {percent} interval |",
        "|---|---|---|",
        f"| pooled out-of-fold ({pooled.patients} patients) | {pooled.score:.4f} | {interval} |",
        f"| prevalence baseline (same patients) | {pooled.floors['prevalence']:.4f} | |",
        f"| best constant prediction (same patients) | {pooled.floors['constant']:.4f} | |",
        "",
        "Lower is better. The interval resamples the patients with replacement "
        f"({pooled.n_resamples} resamples, seed {pooled.seed}). The prevalence baseline "
        "predicts every patient the class frequencies of the scored patients; the best "
        "constant is the one prediction, the same for every patient, with the lowest score "
        "on them (the metric's class weights move it away from the frequencies). Both are "
        "fitted on the scored patients: a model that does not beat them has learnt nothing "
        "the score rewards.",
    ]


def render_markdown(
    report: pd.DataFrame,
    pooled: PooledSummary,
    warnings: Sequence[str] = (),
    notes: Sequence[str] = (),
    plots: Sequence[Path] = (),
) -> str:
    """``cv_report.md``: warnings first, the pooled score and its floors, the fold table,
    the notes on each fold's rule, and links to the plots (by file name).

    Args:
        report: :func:`ctvoco.reports.cross_validation.cross_validation_report`.
        pooled: :func:`ctvoco.reports.cross_validation.pooled_summary`.
        warnings: Sentences shown at the top (missing folds, mixed rules).
        notes: Lines on the rules the folds came from (:func:`rule_lines`).
        plots: PNG files beside the report.
    """
    lines = ["# Cross-validation report", ""]
    for warning in warnings:
        lines += [f"> **Warning:** {warning}", ""]
    lines += ["## Pooled out-of-fold score", "", *_score_lines(pooled), ""]
    lines += [
        "## Folds",
        "",
        "Losses are the competition's per-target weighted log losses, `score` their mean; "
        "`auc_<target>` is the ROC AUC of injured against healthy.",
        "",
        to_markdown(report).rstrip("\n"),
        "",
    ]
    if notes:
        lines += [*(f"- {note}" for note in notes), ""]
    if plots:
        lines += ["## Plots", ""]
        lines += [
            f"![{PLOT_TITLES.get(Path(p).name, Path(p).stem)}]({Path(p).name})" for p in plots
        ]
        lines.append("")
    return "\n".join(lines)


def rule_lines(report: pd.DataFrame, oof_files: Sequence[Path]) -> list[str]:
    """One line per fold: the rule its OOF came from; a note when that is optimistic."""
    folds = report.iloc[: len(oof_files)]
    lines = [
        f"{Path(run).name}: oof_from={rule}"
        for run, rule in zip(folds["run"], folds["oof_from"], strict=True)
    ]
    chosen = [
        Path(run).name
        for run, rule in zip(folds["run"], folds["oof_from"], strict=True)
        if selected_on_fold(Path(run), str(rule))
    ]
    if chosen:
        lines.append(
            f"note: the weights of {', '.join(chosen)} were chosen on the fold's own validation "
            "patients (oof_from=best, or early stopping): the CV score is optimistic; "
            "oof_from=last or step:N gives an unbiased one"
        )
    return lines
