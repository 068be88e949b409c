"""Combine the out-of-fold predictions of several fold runs into one cross-validation report.

The program ``ctvoco-cv-report DIR`` (:mod:`ctvoco.cli.cv_report`) finds every ``oof.csv``
under ``DIR`` (e.g. the multirun folder of
``ctvoco-finetune -m +experiment=rsna data.fold=0,1,2,3,4``), scores each fold, and writes
next to them ``cv_report.csv`` (one row per fold with its ``data.fold``, then mean, std and
the pooled out-of-fold score; six losses, score and six AUCs each), ``cv_report.md`` and
the ROC and reliability plots of the pooled predictions (``cv_roc.png``,
``cv_calibration.png``). ``cv_report.md`` starts with the warnings: folds of the recorded
``data.n_folds`` that are missing, which leave the pooled score on part of the patients.
It gives the pooled score with a patient-bootstrap interval, beside two floors on the same
patients: the prevalence baseline and the best constant prediction. It says which rule
chose the weights of each fold's out-of-fold predictions (``oof_from`` in the fold's
``metrics.json``) and refuses folds made with different rules (``--allow-mixed-rules``
only warns). The interval and the floors are computed by :mod:`ctvoco.metrics.bootstrap`
and :mod:`ctvoco.metrics.floors`; the Markdown and the plots are rendered by
:mod:`ctvoco.reports.cv_markdown`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ctvoco.errors import UserError
from ctvoco.labels import aggregate_predictions
from ctvoco.metrics.bootstrap import bootstrap_interval, patient_arrays
from ctvoco.metrics.floors import constant_floors
from ctvoco.metrics.rsna import rsna_score, score_arrays, target_auc


def find_oof_files(directory: str | Path) -> list[Path]:
    """Every ``oof.csv`` under ``directory``, sorted."""
    files = sorted(Path(directory).rglob("oof.csv"))
    if not files:
        raise UserError(f"no oof.csv under {directory}; run ctvoco-finetune for each fold first")
    return files


RUN_CONFIGS = ("config.yaml", ".hydra/config.yaml")
"""Where a fold run keeps its configuration, in the order they are looked for."""


def run_config(run_dir: Path) -> dict[str, Any] | None:
    """A fold run's configuration (its ``config.yaml``, else ``.hydra/config.yaml``).

    Returns:
        The parsed mapping; ``None`` when the run holds neither file.

    Raises:
        UserError: The file exists but is not a YAML mapping.
    """
    for name in RUN_CONFIGS:
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"{path}: not a readable config ({exc})") from exc
        if not isinstance(config, dict):
            raise UserError(f"{path}: not a config mapping")
        return config
    return None


def labels_for(run_dir: Path) -> Path:
    """The labels CSV a fold run used (``data.labels_csv``, else ``data.root``/train.csv).

    Raises:
        UserError: The run records neither (or has no config); pass ``--labels``.
    """
    data = (run_config(run_dir) or {}).get("data")
    data = data if isinstance(data, dict) else {}
    if data.get("labels_csv"):
        return Path(data["labels_csv"])
    if data.get("root"):
        return Path(data["root"]) / "train.csv"
    raise UserError(
        f"{run_dir}: no config.yaml recording data.labels_csv or data.root; pass --labels train.csv"
    )


@dataclass(frozen=True)
class FoldRun:
    """A fold run and the fold it validated, as its config records them.

    Attributes:
        run_dir: The run directory (holding ``oof.csv``).
        fold: ``data.fold``; ``None`` when not recorded.
        n_folds: ``data.n_folds``; ``None`` when not recorded.
    """

    run_dir: Path
    fold: int | None
    n_folds: int | None


def _integer(value: Any) -> int | None:
    """``value`` when it is an integer (not a bool), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def fold_run(oof_file: Path) -> FoldRun:
    """The :class:`FoldRun` of an ``oof.csv`` (from the config of the folder holding it)."""
    data = (run_config(oof_file.parent) or {}).get("data")
    data = data if isinstance(data, dict) else {}
    return FoldRun(oof_file.parent, _integer(data.get("fold")), _integer(data.get("n_folds")))


def _ids(values: Sequence[int]) -> str:
    """``0, 1, 3`` for fold ids."""
    return ", ".join(str(v) for v in sorted(values))


def check_fold_ids(runs: Sequence[FoldRun]) -> None:
    """Refuse runs of different fold assignments, or two runs of one fold.

    Raises:
        UserError: The runs record different ``data.n_folds``, or the same ``data.fold``.
    """
    counts = {run.n_folds for run in runs if run.n_folds is not None}
    if len(counts) > 1:
        listing = "; ".join(f"{run.run_dir}: n_folds={run.n_folds}" for run in runs)
        raise UserError(
            f"the fold runs were made with different fold assignments ({listing}); "
            "report runs of one data.n_folds together"
        )
    seen: dict[int, Path] = {}
    for run in runs:
        if run.fold is None:
            continue
        if run.fold in seen:
            raise UserError(
                f"{seen[run.fold]} and {run.run_dir} both validated fold {run.fold} "
                "(data.fold in their config.yaml); keep one run per fold in the folder"
            )
        seen[run.fold] = run.run_dir


def fold_warnings(runs: Sequence[FoldRun], scored: int, labelled: int) -> list[str]:
    """Warnings about folds that are missing, or that cannot be checked.

    Args:
        runs: The fold runs reported.
        scored: Patients in the folds' ``oof.csv`` (the pooled score's patients).
        labelled: Patients in the labels file.

    Returns:
        Sentences naming the expected, found and missing fold ids; empty when every fold
        of the recorded ``data.n_folds`` is present.
    """
    unknown = [run for run in runs if run.fold is None]
    if unknown:
        names = ", ".join(str(run.run_dir) for run in unknown)
        return [
            f"no data.fold in the config.yaml of {names}: cannot check that every fold is "
            f"present; the pooled score covers {scored} of {labelled} labelled patients"
        ]
    counts = {run.n_folds for run in runs if run.n_folds is not None}
    found = [run.fold for run in runs if run.fold is not None]
    if not counts:
        return [
            f"no data.n_folds in the runs' config.yaml (folds found: {_ids(found)}): cannot "
            f"check that every fold is present; the pooled score covers {scored} of "
            f"{labelled} labelled patients"
        ]
    n_folds = counts.pop()
    missing = sorted(set(range(n_folds)) - set(found))
    if not missing:
        return []
    absent = f"fold {missing[0]} is" if len(missing) == 1 else f"folds {_ids(missing)} are"
    return [
        f"{absent} missing: data.n_folds={n_folds} in the runs' config.yaml expects folds "
        f"{_ids(range(n_folds))}, found {_ids(found)}; the pooled score covers only the "
        f"{scored} of {labelled} labelled patients in the folds found"
    ]


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
        One row per fold (ordered by fold id, runs without one last), then ``mean``,
        ``std`` and ``pooled``; columns: ``run``, ``fold`` (``data.fold`` of the run's
        config; empty for the summary rows), ``oof_from`` (the rule that chose the fold's
        weights, :func:`oof_rule`; for the summary rows the folds' common rule, or
        ``mixed``), ``patients``, the six losses, ``score`` and ``auc_<target>``.

    Raises:
        UserError: A patient is in several folds, two runs validated one fold, or the runs
            record different ``data.n_folds``.
    """
    runs = [fold_run(path) for path in oof_files]
    check_fold_ids(runs)
    rows, frames = [], []
    for path, run in zip(oof_files, runs, strict=True):
        oof = pd.read_csv(path)
        frames.append(oof)
        subset = labels[labels["patient_id"].isin(oof["patient_id"])]
        rows.append(
            {
                "run": str(path.parent),
                "fold": run.fold,
                "oof_from": oof_rule(path.parent),
                "patients": int(oof["patient_id"].nunique()),
                **_metrics(subset, oof),
            }
        )
    _check_disjoint(frames)
    table = pd.DataFrame(rows)
    table["fold"] = table["fold"].astype("Int64")
    table = table.sort_values(["fold", "run"], na_position="last", kind="stable")
    numeric = table.drop(columns=["run", "fold", "oof_from", "patients"])
    rules = table["oof_from"].unique()
    common = str(rules[0]) if len(rules) == 1 else "mixed"
    pooled = pd.concat(frames, ignore_index=True)
    summary = pd.DataFrame(
        [
            {"run": "mean", "oof_from": common, **numeric.mean().to_dict()},
            {"run": "std", "oof_from": common, **numeric.std(ddof=1).to_dict()},
            {
                "run": "pooled",
                "oof_from": common,
                "patients": int(pooled["patient_id"].nunique()),
                **_metrics(labels[labels["patient_id"].isin(pooled["patient_id"])], pooled),
            },
        ]
    )
    report = pd.concat([table, summary], ignore_index=True)
    report["fold"] = report["fold"].astype("Int64")
    report["patients"] = report["patients"].astype("Int64")
    return report


def _check_disjoint(frames: Sequence[pd.DataFrame]) -> None:
    """Refuse folds that share patients.

    Raises:
        UserError: Naming how many patients are in several folds' ``oof.csv``.
    """
    owners = pd.concat(
        [f[["patient_id"]].drop_duplicates().assign(fold=i) for i, f in enumerate(frames)]
    )
    shared = owners["patient_id"].duplicated(keep=False)
    if shared.any():
        raise UserError(
            f"{owners.loc[shared, 'patient_id'].nunique()} patients appear in several folds' "
            "oof.csv; were the runs made with different fold assignments?"
        )


def _metrics(labels: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    """The six losses, ``score`` and ``auc_<target>`` of ``predictions``."""
    out = rsna_score(labels, predictions)
    out.update({f"auc_{k}": v for k, v in target_auc(labels, predictions).items()})
    return out


# --------------------------------------------------------------------------- pooled score


def pooled_predictions(oof_files: Sequence[Path]) -> pd.DataFrame:
    """The folds' ``oof.csv`` concatenated (several rows per patient kept)."""
    return pd.concat([pd.read_csv(path) for path in oof_files], ignore_index=True)


@dataclass(frozen=True)
class PooledSummary:
    """The pooled out-of-fold score with its uncertainty and its floors.

    Attributes:
        patients: Patients in the folds' ``oof.csv``.
        labelled: Patients in the labels file.
        score: The pooled competition score.
        interval: Patient-bootstrap interval of ``score`` (``None``: not computed).
        level: Coverage of ``interval``.
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.
        floors: :func:`ctvoco.metrics.floors.constant_floors` of the scored patients.
    """

    patients: int
    labelled: int
    score: float
    interval: tuple[float, float] | None
    level: float
    n_resamples: int
    seed: int
    floors: dict[str, float]


def pooled_summary(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PooledSummary:
    """Score, bootstrap interval and floors of the pooled out-of-fold predictions.

    Args:
        labels: ``train.csv``-shaped labels (all labelled patients).
        predictions: The pooled ``oof.csv`` rows (:func:`pooled_predictions`).
        n_resamples: Bootstrap resamples of the patients; 0 computes no interval.
        seed: Bootstrap seed.
        level: Coverage of the interval.
    """
    onehot, probs = patient_arrays(labels, predictions)
    interval = bootstrap_interval(onehot, probs, n_resamples, seed, level) if n_resamples else None
    return PooledSummary(
        patients=onehot.shape[0],
        labelled=int(labels["patient_id"].nunique()),
        score=score_arrays(onehot, probs)["score"],
        interval=interval,
        level=level,
        n_resamples=n_resamples,
        seed=seed,
        floors=constant_floors(onehot),
    )


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
