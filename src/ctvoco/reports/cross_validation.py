"""Combine the out-of-fold predictions of several fold runs into one cross-validation report.

The program ``ctvoco-cv-report DIR`` (:mod:`ctvoco.cli.cv_report`) finds every ``oof.csv`` under ``DIR`` (e.g. the multirun folder of
``ctvoco-finetune -m +experiment=rsna data.fold=0,1,2,3,4``), scores each fold, and writes
``cv_report.csv`` (one row per fold, then mean, std and the pooled out-of-fold score) and
``cv_report.md`` next to them. It says which rule chose the weights of each fold's
out-of-fold predictions (``oof_from`` in the fold's ``metrics.json``) and refuses folds made
with different rules (``--allow-mixed-rules`` only warns).

``--fit-scaling`` fits per-target probability factors (:mod:`ctvoco.classify.scaling`) on
the out-of-fold predictions: it prints the pooled score without them, the honest score of
factors fitted on the other folds only (each fold scaled with the factors of the rest), and
the optimistic one of factors fitted and scored on all folds; it writes those all-fold
factors to ``scaling.json`` (and with ``--store-in CKPT ...`` into checkpoints), for
``ctvoco-predict``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ctvoco.errors import UserError
from ctvoco.labels import SCORE_COLUMNS, aggregate_predictions
from ctvoco.metrics.rsna import rsna_score, target_auc


def find_oof_files(directory: str | Path) -> list[Path]:
    """Every ``oof.csv`` under ``directory``, sorted."""
    files = sorted(Path(directory).rglob("oof.csv"))
    if not files:
        raise UserError(f"no oof.csv under {directory}; run ctvoco-finetune for each fold first")
    return files


def labels_for(run_dir: Path) -> Path:
    """The labels CSV a fold run used (from its ``config.yaml``)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = config["data"]
    return Path(data.get("labels_csv") or Path(data["root"]) / "train.csv")


UNRECORDED_RULE = "best (not recorded)"
"""The rule of a ``metrics.json`` without ``oof_from``: ctvoco then always evaluated the
checkpoint selected on the fold."""

UNKNOWN_RULE = "unknown (no metrics.json)"
"""The rule of a fold whose run directory holds no ``metrics.json``."""


def oof_rule(run_dir: Path) -> str:
    """Which weights a fold's ``oof.csv`` came from (``oof_from`` of its ``metrics.json``).

    Returns:
        ``best``, ``last``, ``step:N``, ``epoch:N``; :data:`UNRECORDED_RULE` or
        :data:`UNKNOWN_RULE` when the run does not say.
    """
    path = run_dir / "metrics.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return UNKNOWN_RULE
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable metrics.json ({exc})") from exc
    rule = record.get("oof_from") if isinstance(record, dict) else None
    return str(rule) if rule else UNRECORDED_RULE


def selected_on_fold(run_dir: Path, rule: str) -> bool:
    """Whether the fold's OOF weights were chosen with its own validation patients."""
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        record = {}
    flag = record.get("selected_on_fold") if isinstance(record, dict) else None
    return bool(flag) if flag is not None else rule.startswith("best")


def _rule_family(rule: str) -> str:
    """The rule that counts when comparing folds (an unrecorded rule was ``best``)."""
    return "best" if rule == UNRECORDED_RULE else rule


def check_rules(rules: dict[str, str], allow_mixed: bool = False) -> list[str]:
    """Refuse (or, with ``allow_mixed``, warn about) folds whose OOF came from different rules.

    Args:
        rules: Run directory -> :func:`oof_rule`.
        allow_mixed: Warn instead of refusing.

    Returns:
        Warnings to print.

    Raises:
        UserError: The folds mix rules and ``allow_mixed`` is false.
    """
    families = {_rule_family(r) for r in rules.values() if r != UNKNOWN_RULE}
    warnings = [
        f"{run} has no metrics.json: which weights its oof.csv came from is unknown"
        for run, rule in rules.items()
        if rule == UNKNOWN_RULE
    ]
    if len(families) > 1:
        listing = "; ".join(f"{run}: oof_from={rule}" for run, rule in rules.items())
        message = (
            f"the folds' out-of-fold predictions mix rules ({listing}): their pooled score "
            "estimates no single procedure; rerun the folds with one oof_from"
        )
        if not allow_mixed:
            raise UserError(f"{message}, or pass --allow-mixed-rules")
        warnings.append(message)
    return warnings


def cross_validation_report(oof_files: Sequence[Path], labels: pd.DataFrame) -> pd.DataFrame:
    """Per-fold metrics, their mean and std, and the pooled out-of-fold metrics.

    Args:
        oof_files: One ``oof.csv`` per fold (submission columns + ``series_id``).
        labels: Validated ``train.csv`` frame.

    Returns:
        Rows ``fold <name>`` ..., ``mean``, ``std``, ``pooled``; columns: ``run``,
        ``oof_from`` (the rule that chose the fold's weights, :func:`oof_rule`; for the
        summary rows the folds' common rule, or ``mixed``), the six losses, ``score`` and
        ``auc_<target>``.
    """
    rows, frames = [], []
    for path in oof_files:
        oof = pd.read_csv(path)
        frames.append(oof)
        subset = labels[labels["patient_id"].isin(oof["patient_id"])]
        rows.append(
            {"run": str(path.parent), "oof_from": oof_rule(path.parent), **_metrics(subset, oof)}
        )
    table = pd.DataFrame(rows)
    numeric = table.drop(columns=["run", "oof_from"])
    rules = table["oof_from"].unique()
    common = str(rules[0]) if len(rules) == 1 else "mixed"
    pooled = pd.concat(frames, ignore_index=True)
    owners = pd.concat(
        [f[["patient_id"]].drop_duplicates().assign(fold=i) for i, f in enumerate(frames)]
    )
    shared = owners["patient_id"].duplicated(keep=False)
    if shared.any():
        raise UserError(
            f"{owners.loc[shared, 'patient_id'].nunique()} patients appear in several folds' "
            "oof.csv; were the runs made with different fold assignments?"
        )
    summary = pd.DataFrame(
        [
            {"run": "mean", "oof_from": common, **numeric.mean().to_dict()},
            {"run": "std", "oof_from": common, **numeric.std(ddof=1).to_dict()},
            {
                "run": "pooled",
                "oof_from": common,
                **_metrics(labels[labels["patient_id"].isin(pooled["patient_id"])], pooled),
            },
        ]
    )
    return pd.concat([table, summary], ignore_index=True)


def _metrics(labels: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    out = rsna_score(labels, predictions)
    out.update({f"auc_{k}": v for k, v in target_auc(labels, predictions).items()})
    return out


def to_markdown(report: pd.DataFrame) -> str:
    """The report as a Markdown table (losses and score, 4 decimals)."""
    columns = ["run", *SCORE_COLUMNS, "score"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in report[columns].iterrows():
        cells = [str(row["run"])] + [f"{row[c]:.4f}" for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pooled_score(labels: pd.DataFrame, frames: Sequence[pd.DataFrame]) -> float:
    """The competition score of the concatenated ``frames``."""
    pooled = pd.concat(frames, ignore_index=True)
    return rsna_score(labels[labels["patient_id"].isin(pooled["patient_id"])], pooled)["score"]


def fit_scaling_out_of_fold(oof_files: Sequence[Path], labels: pd.DataFrame) -> dict[str, Any]:
    """Per-target probability factors fitted on the folds' out-of-fold predictions.

    Args:
        oof_files: One ``oof.csv`` per fold.
        labels: Validated ``train.csv`` frame.

    Returns:
        ``factors`` (fitted on all folds: for test predictions), ``fold_factors`` (run ->
        factors fitted on the other folds), and ``scores``: ``unscaled`` (pooled),
        ``cross_fitted`` (each fold scaled with the factors of the other folds, pooled: the
        honest estimate; ``None`` for a single fold) and ``in_sample`` (all-fold factors
        scored on the same predictions: optimistic).
    """
    from ctvoco.classify.scaling import apply_scaling, fit_scaling

    frames = [pd.read_csv(path) for path in oof_files]
    patients = [aggregate_predictions(frame) for frame in frames]
    fold_factors: dict[str, dict[str, float]] = {}
    crossed = []
    if len(frames) > 1:
        for k, path in enumerate(oof_files):
            others = pd.concat([f for j, f in enumerate(frames) if j != k], ignore_index=True)
            factors = fit_scaling(others, labels)
            fold_factors[str(path.parent)] = factors
            crossed.append(apply_scaling(patients[k], factors))
    factors = fit_scaling(pd.concat(frames, ignore_index=True), labels)
    scores = {
        "unscaled": _pooled_score(labels, frames),
        "cross_fitted": _pooled_score(labels, crossed) if crossed else None,
        "in_sample": _pooled_score(labels, [apply_scaling(p, factors) for p in patients]),
    }
    return {"factors": factors, "fold_factors": fold_factors, "scores": scores}


def scaling_summary(result: dict[str, Any]) -> str:
    """What :func:`fit_scaling_out_of_fold` found, as lines for the terminal."""
    from ctvoco.classify.scaling import format_factors

    scores = result["scores"]
    crossed = scores["cross_fitted"]
    honest = "n/a (a single fold)" if crossed is None else f"{crossed:.4f}"
    lines = [
        "probability scaling (per-target factors fitted to lower the score); pooled OOF score:",
        f"  without scaling:                                       {scores['unscaled']:.4f}",
        f"  each fold with factors fitted on the other folds:      {honest} (honest)",
        f"  with factors fitted on all folds, scored on the same:  {scores['in_sample']:.4f} "
        "(optimistic)",
        f"  factors fitted on all folds (for test predictions): {format_factors(result['factors'])}",
    ]
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
