"""The demo's report: a Markdown page with the results table and its figures."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.cli.demo_paths import DemoPaths
from ctvoco.io.atomic import write_bytes_atomic, write_csv_atomic, write_text_atomic
from ctvoco.labels import SCORE_COLUMNS, TARGETS
from ctvoco.reports.plots import SMALLEST_FONT, injury_scores, plot_roc, save_figure
from ctvoco.training.history import plot_learning_curves
from ctvoco.voco.image_logging import FIGURE_PREFIX

SLICE_FRACTIONS = (0.3, 0.55)
"""Depth of the sample slices shown per patient, as fractions of the volume's depth."""


def write_demo_report(
    paths: DemoPaths,
    labels: pd.DataFrame,
    submissions: dict[str, pd.DataFrame],
    table: pd.DataFrame,
) -> Path:
    """Write ``<root>/report/report.md`` and its PNGs; return the Markdown path."""
    out = paths.report
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "Sample slices of test patients": _sample_slices(
            paths, labels, submissions, out / "samples.png"
        ),
        "VoCo pretraining": _pretraining(paths, out / "pretraining.png"),
        **_voco_figure(paths, out),
        "Finetuning": _finetuning(paths, tuple(submissions), out / "finetuning.png"),
        "ROC per target (held-out patients)": plot_roc(labels, submissions, out / "roc.png"),
    }
    lines = [
        "# ctvoco demo report",
        "",
        f"Held-out synthetic patients: {len(labels)}. Competition score and losses: lower is better.",
        "",
        _markdown(table),
        "",
    ]
    for title, figure in figures.items():
        if figure is not None:
            lines += [f"## {title}", "", f"![{title}]({figure.name})", ""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    write_csv_atomic(out / "results.csv", table)
    return path


def _markdown(table: pd.DataFrame) -> str:
    columns = ["score", *SCORE_COLUMNS, *[f"auc_{c}" for c in SCORE_COLUMNS]]
    lines = ["| init | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for init, row in table[columns].iterrows():
        lines.append(f"| {init} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def _true_injuries(row: pd.Series) -> str:
    names = [t for t in TARGETS if row.get(f"{t}_healthy", 1) < 0.5]
    return ", ".join(names) if names else "healthy"


def _sample_slices(
    paths: DemoPaths, labels: pd.DataFrame, submissions: dict[str, pd.DataFrame], path: Path
) -> Path | None:
    """Two slices of a few test patients, each titled with its level, and their predictions."""
    cache = VolumeCache(paths.predict_cache)
    if not cache.records_dir.exists():
        return None
    manifest = cache.manifest()
    manifest = manifest[manifest["status"] == "ok"]
    injured = labels[labels["any_injury"] == 1]
    chosen = pd.concat([injured.head(3), labels[labels["any_injury"] == 0].head(1)])
    if chosen.empty:
        return None
    scores = {init: injury_scores(labels, sub)[1] for init, sub in submissions.items()}
    columns = len(SLICE_FRACTIONS) + 1
    fig, axes = plt.subplots(
        len(chosen), columns, figsize=(4 * columns, 3.9 * len(chosen)), squeeze=False
    )
    for row_axes, (_, patient) in zip(axes, chosen.iterrows(), strict=True):
        for ax in row_axes:
            ax.set_axis_off()
        pid = int(patient["patient_id"])
        keys = manifest.loc[manifest["patient_id"].astype(int) == pid, "key"]
        if keys.empty:
            continue
        volume = cache.load(str(keys.iloc[0]))
        volume = volume[0] if volume.ndim == 4 else volume
        for ax, fraction in zip(row_axes, SLICE_FRACTIONS, strict=False):
            level = int(fraction * (volume.shape[0] - 1))
            ax.imshow(volume[level], cmap="gray", vmin=0, vmax=255)
            ax.set_title(
                f"patient {pid}: slice {level + 1} of {volume.shape[0]}",
                fontsize=SMALLEST_FONT + 1,
                loc="left",
            )
        _prediction_panel(row_axes[-1], _true_injuries(patient), pid, scores)
    return save_figure(fig, path)


def _prediction_panel(ax: plt.Axes, truth: str, pid: int, scores: dict[str, pd.DataFrame]) -> None:
    """The true injuries and a table of P(injury) per target (rows) and init (columns)."""
    width = max([13, *(len(init) for init in scores)]) + 1
    lines = ["P(injury)".ljust(width) + "".join(init.rjust(width) for init in scores)]
    for target in TARGETS:
        values = "".join(f"{scores[init].loc[pid, target]:.2f}".rjust(width) for init in scores)
        lines.append(target.ljust(width) + values)
    ax.set_title(f"true: {truth}", fontsize=SMALLEST_FONT + 1, loc="left")
    ax.text(
        0.0,
        0.95,
        "\n".join(lines),
        family="monospace",
        fontsize=SMALLEST_FONT,
        va="top",
        ha="left",
        transform=ax.transAxes,
    )


def _pretraining(paths: DemoPaths, path: Path) -> Path | None:
    csv = paths.pretrain / "metrics.csv"
    if not csv.exists():
        return None
    return plot_learning_curves(pd.read_csv(csv), ("loss", "position_mae"), path)


def _finetuning(paths: DemoPaths, inits: tuple[str, ...], path: Path) -> Path | None:
    """Training loss and validation score per epoch, every init in each panel."""
    frames = {
        init: pd.read_csv(paths.finetune(init) / "metrics.csv")
        for init in inits
        if (paths.finetune(init) / "metrics.csv").exists()
    }
    if not frames:
        return None
    panels = (("train/loss", "training loss (weighted)"), ("val/score", "validation score"))
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.8), squeeze=False)
    for ax, (column, title) in zip(axes[0], panels, strict=True):
        for init, frame in frames.items():
            if column in frame:
                series = frame[["epoch", column]].dropna()
                ax.plot(series["epoch"], series[column], marker="o", markersize=3, label=init)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=SMALLEST_FONT)
    return save_figure(fig, path)


def _voco_figure(paths: DemoPaths, out: Path) -> dict[str, Path]:
    """The latest VoCo views-and-overlaps figure of pretraining, copied next to the report.

    Returns:
        ``{title: copy}``, or nothing when pretraining logged no such figure.
    """
    step_of = re.compile(rf"{re.escape(FIGURE_PREFIX)}(\d+)\.png$")
    found = sorted(
        (int(match.group(1)), figure)
        for figure in (paths.pretrain / "figures").glob(f"{FIGURE_PREFIX}*.png")
        if (match := step_of.search(figure.name))
    )
    if not found:
        return {}
    step, latest = found[-1]
    copy = out / "voco_overlaps.png"
    write_bytes_atomic(copy, latest.read_bytes())
    return {f"VoCo views and overlaps (validation at step {step})": copy}
