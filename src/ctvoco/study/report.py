"""The study's tables and figure, from the runs' predictions for the evaluated patients.

Every number is computed on the same evaluated patients. Intervals are 95 % bootstrap
intervals that resample the patients and the seeds (:mod:`ctvoco.metrics.paired`): an
arm's score is the mean over its seeds; a paired difference is the mean over seeds of
``score(reference) - score(treatment)``, so a positive difference means the treatment
(e.g. ``voco``) scores lower, i.e. better. The minimal detectable effect (MDE) is the
difference this design would detect with 80 % power at the 5 % level, from the
difference's bootstrap standard error. The two floors are constant predictions fitted on
the evaluated patients themselves (:mod:`ctvoco.metrics.floors`): a model that does not
beat the best constant has learnt nothing the metric rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctvoco.errors import DataError
from ctvoco.labels import SCORE_COLUMNS
from ctvoco.metrics.bootstrap import patient_arrays
from ctvoco.metrics.paired import auc_intervals, floor_intervals, paired_difference, score_interval
from ctvoco.metrics.rsna import rsna_score, target_auc
from ctvoco.study.arms import COMPARISONS
from ctvoco.study.design import FinetuneRun

Interval = tuple[float, float, float]
"""``(estimate, low, high)``."""


@dataclass(frozen=True)
class StudyResults:
    """What the report is made of.

    Attributes:
        runs: One row per finetuning run (arm, fraction, seed, score, losses, AUCs, steps).
        onehot: ``(N, 13)`` labels of the evaluated patients.
        probs: ``(arm, fraction) -> (S, N, 13)`` predictions, seeds in ``seeds`` order.
        seeds: The finetuning seeds.
    """

    runs: pd.DataFrame
    onehot: np.ndarray
    probs: dict[tuple[str, float], np.ndarray]
    seeds: tuple[int, ...]


def collect(
    runs: Sequence[FinetuneRun],
    predictions: dict[FinetuneRun, pd.DataFrame],
    labels: pd.DataFrame,
    extra: dict[FinetuneRun, dict[str, object]],
) -> StudyResults:
    """Score every run and stack the predictions per arm and fraction.

    Raises:
        DataError: Runs predicted different patients.
    """
    rows, stacks, onehot = [], {}, None
    seeds = tuple(dict.fromkeys(run.seed for run in runs))
    for run in runs:
        submission = predictions[run]
        truth, probs = patient_arrays(labels, submission)
        if onehot is None:
            onehot = truth
        elif truth.shape != onehot.shape or not np.array_equal(truth, onehot):
            raise DataError(f"run {run.name} predicted other patients than the first run")
        stacks.setdefault((run.arm.name, run.fraction), {})[run.seed] = probs
        scores = rsna_score(labels, submission)
        aucs = {f"auc_{k}": v for k, v in target_auc(labels, submission).items()}
        rows.append(
            {
                "arm": run.arm.name,
                "fraction": run.fraction,
                "seed": run.seed,
                "pretrain_seed": None if run.pretrain is None else run.pretrain.seed,
                **extra.get(run, {}),
                "score": scores["score"],
                **{k: scores[k] for k in SCORE_COLUMNS},
                **aucs,
            }
        )
    assert onehot is not None
    probs = {key: np.stack([by_seed[s] for s in seeds]) for key, by_seed in stacks.items()}
    return StudyResults(pd.DataFrame(rows), onehot, probs, seeds)


def summary_tables(results: StudyResults, n_resamples: int = 2000) -> dict[str, pd.DataFrame]:
    """``scores``, ``differences``, ``aucs`` and ``floors`` tables (one row per line)."""
    scores, aucs, differences = [], [], []
    arms = list(dict.fromkeys(results.runs["arm"]))
    fractions = sorted(results.runs["fraction"].unique())
    for fraction in fractions:
        part = results.runs[results.runs["fraction"] == fraction]
        for arm in arms:
            rows = part[part["arm"] == arm]
            probs = results.probs[(arm, fraction)]
            mean, low, high = score_interval(results.onehot, probs, n_resamples=n_resamples)
            row = {
                "fraction": fraction,
                "arm": arm,
                "labelled": int(rows["labelled_patients"].iloc[0]),
            }
            row |= {"score": mean, "score_low": low, "score_high": high}
            for target in SCORE_COLUMNS:
                row[target] = rows[target].mean()
                row[f"{target}_sd"] = rows[target].std(ddof=1) if len(rows) > 1 else 0.0
            row |= {
                "steps_trained": rows["steps_trained"].mean(),
                "selected_step": rows["selected_step"].mean(),
                "seeds": len(rows),
            }
            scores.append(row)
            auc_row = {"fraction": fraction, "arm": arm}
            for target, (m, lo, hi) in auc_intervals(
                results.onehot, probs, n_resamples=n_resamples
            ).items():
                auc_row |= {target: m, f"{target}_low": lo, f"{target}_high": hi}
            aucs.append(auc_row)
        for reference, treatment in COMPARISONS:
            if (reference, fraction) in results.probs and (treatment, fraction) in results.probs:
                d = paired_difference(
                    results.onehot,
                    results.probs[(reference, fraction)],
                    results.probs[(treatment, fraction)],
                    n_resamples=n_resamples,
                )
                differences.append(
                    {
                        "fraction": fraction,
                        "reference": reference,
                        "treatment": treatment,
                        "difference": d.difference,
                        "low": d.low,
                        "high": d.high,
                        "se": d.se,
                        "mde": d.mde,
                        "wins": d.wins,
                        "seeds": d.seeds,
                    }
                )
    floors = [
        {"floor": name, "score": v, "low": lo, "high": hi}
        for name, (v, lo, hi) in floor_intervals(results.onehot, n_resamples=n_resamples).items()
    ]
    return {
        "scores": pd.DataFrame(scores),
        "differences": pd.DataFrame(differences),
        "aucs": pd.DataFrame(aucs),
        "floors": pd.DataFrame(floors),
    }


def _ci(value: float, low: float, high: float, digits: int = 3) -> str:
    if np.isnan(value):
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


FLOOR_NAMES = {"constant": "best constant", "prevalence": "prevalence baseline"}


def markdown(tables: dict[str, pd.DataFrame], n_patients: int) -> str:
    """The tables as Markdown: scores with CIs and floors, paired differences, AUCs, steps."""
    lines = [
        f"Competition score on the {n_patients} evaluated patients (lower is better): mean "
        "over seeds [95 % bootstrap interval over patients and seeds]; per-target weighted "
        "log losses: mean ± standard deviation over seeds.",
        "",
        "| labelled | arm | score | " + " | ".join(SCORE_COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(SCORE_COLUMNS),
    ]
    for _, r in tables["scores"].iterrows():
        losses = " | ".join(f"{r[t]:.3f} ± {r[f'{t}_sd']:.3f}" for t in SCORE_COLUMNS)
        label = f"{r['fraction']:.0%} ({int(r['labelled'])})"
        lines.append(
            f"| {label} | {r['arm']} | {_ci(r['score'], r['score_low'], r['score_high'])} | {losses} |"
        )
    for _, f in tables["floors"].iterrows():
        cells = " | ".join("" for _ in SCORE_COLUMNS)
        lines.append(
            f"| floor | {FLOOR_NAMES[f['floor']]} | {_ci(f['score'], f['low'], f['high'])} | {cells} |"
        )
    if not tables["differences"].empty:
        lines += [
            "",
            "Paired difference (reference − treatment, mean over seeds; > 0: the treatment "
            "scores better) [95 % bootstrap interval]; MDE: the smallest difference this "
            "design detects with 80 % power at the 5 % level; seeds: where the treatment "
            "scored better.",
            "",
            "| labelled | reference → treatment | difference | MDE | seeds |",
            "|---|---|---|---|---|",
        ]
        for _, d in tables["differences"].iterrows():
            lines.append(
                f"| {d['fraction']:.0%} | {d['reference']} → {d['treatment']} | "
                f"{_ci(d['difference'], d['low'], d['high'])} | {d['mde']:.3f} | "
                f"{int(d['wins'])} of {int(d['seeds'])} |"
            )
    lines += [
        "",
        "AUC of injured vs healthy per target: mean over seeds [95 % bootstrap interval].",
        "",
        "| labelled | arm | " + " | ".join(SCORE_COLUMNS) + " |",
        "|---|---|" + "---|" * len(SCORE_COLUMNS),
    ]
    for _, a in tables["aucs"].iterrows():
        cells = " | ".join(_ci(a[t], a[f"{t}_low"], a[f"{t}_high"], 2) for t in SCORE_COLUMNS)
        lines.append(f"| {a['fraction']:.0%} | {a['arm']} | {cells} |")
    lines += [
        "",
        "Optimiser steps trained and step of the selected checkpoint, mean over seeds:",
        "",
        "| labelled | arm | steps trained | selected step |",
        "|---|---|---|---|",
    ]
    for _, r in tables["scores"].iterrows():
        lines.append(
            f"| {r['fraction']:.0%} | {r['arm']} | {r['steps_trained']:.0f} | {r['selected_step']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _plot_intervals(
    ax, series: list[tuple[str, pd.DataFrame]], value: str, low: str, high: str
) -> list[np.ndarray]:
    """One error-bar line per ``(label, rows)`` against the fraction, side by side.

    Returns:
        The x position of each line's points (log10 of the percentage, nudged apart).
    """
    width, positions = 0.06, []
    for i, (label, rows) in enumerate(series):
        rows = rows.sort_values("fraction")
        x = np.log10(rows["fraction"].to_numpy() * 100) + (i - (len(series) - 1) / 2) * width
        ax.errorbar(
            x,
            rows[value],
            yerr=[rows[value] - rows[low], rows[high] - rows[value]],
            marker="os^D"[i % 4],
            capsize=4,
            label=label,
        )
        positions.append(x)
    return positions


def _fraction_axis(ax, fractions: list[float], ylabel: str, title: str) -> None:
    """Ticks at the labelled fractions, labels, legend and grid."""
    ax.set_xticks(np.log10(np.array(fractions) * 100), [f"{f:.0%}" for f in fractions])
    ax.set_xlabel("labelled share of the training pool", fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(title, fontsize=12)
    ax.legend(fontsize=10)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=10)


def plot(tables: dict[str, pd.DataFrame], path: Path) -> Path:
    """Score per arm against the labelled fraction beside the floors, and the paired differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ctvoco.reports.plots import save_figure

    scores, differences, floors = tables["scores"], tables["differences"], tables["floors"]
    fractions = sorted(scores["fraction"].unique())
    panels = 2 if not differences.empty else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 4.6), squeeze=False)
    ax = axes[0, 0]
    arms = list(dict.fromkeys(scores["arm"]))
    _plot_intervals(
        ax, [(a, scores[scores["arm"] == a]) for a in arms], "score", "score_low", "score_high"
    )
    for (_, f), style in zip(floors.iterrows(), ("--", ":"), strict=False):
        ax.axhline(f["score"], ls=style, color="gray", label=FLOOR_NAMES[f["floor"]])
        ax.axhspan(f["low"], f["high"], color="gray", alpha=0.12)
    _fraction_axis(ax, fractions, "competition score (lower is better)", "score with 95 % interval")
    if panels == 2:
        ax = axes[0, 1]
        pairs = differences.groupby(["reference", "treatment"], sort=False)
        series = [(f"{ref} − {treat}", rows) for (ref, treat), rows in pairs]
        for x, (_, rows) in zip(
            _plot_intervals(ax, series, "difference", "low", "high"), series, strict=True
        ):
            ax.scatter(x, rows.sort_values("fraction")["mde"], marker="_", s=200, color="black")
        ax.scatter([], [], marker="_", s=200, color="black", label="MDE (80 % power)")
        ax.axhline(0.0, color="black", lw=0.8)
        _fraction_axis(
            ax,
            fractions,
            "score difference (> 0: treatment better)",
            "paired difference with 95 % interval",
        )
    return save_figure(fig, path)
