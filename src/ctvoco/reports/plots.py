"""Evaluation plots of injury predictions: ROC per target, organ confusion matrices, calibration.

All take a label frame shaped like ``train.csv`` and a prediction frame shaped like
``sample_submission.csv`` (several rows per patient allowed: aggregated by max first),
and write a PNG. Every figure is drawn to be read at its saved size: text of at least
:data:`SMALLEST_FONT` points, numbers in matrix cells in a colour that contrasts with the
cell, and tick labels without a shared offset (no ``1e-3 + 1.0`` in a corner).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from ctvoco.figures import disable_offsets
from ctvoco.io.atomic import atomic_write
from ctvoco.labels import (
    ORGAN_TARGETS,
    SCORE_COLUMNS,
    TARGET_CLASSES,
    aggregate_predictions,
    target_columns,
)

SMALLEST_FONT = 9.0
"""Points: no text a reader needs (legends, annotations, titles) is drawn smaller."""


def injury_scores(
    labels: pd.DataFrame, predictions: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per patient: true ``injured`` flags and predicted injury probabilities per target.

    Returns:
        ``(truth, score)``, both indexed by ``patient_id`` with one column per score target
        (the five targets and ``any_injury``); organ scores are ``1 - p_healthy``.
    """
    preds = aggregate_predictions(predictions, "max").set_index("patient_id")
    labels = labels.set_index("patient_id").loc[preds.index]
    truth, score = {}, {}
    healthy = []
    for target in TARGET_CLASSES:
        cols = target_columns(target)
        group = preds[cols].to_numpy(dtype=float)
        group = group / group.sum(axis=1, keepdims=True)
        healthy.append(group[:, 0])
        score[target] = 1.0 - group[:, 0]
        truth[target] = 1 - labels[cols[0]].to_numpy()
    score["any_injury"] = 1.0 - np.min(np.stack(healthy, axis=1), axis=1)
    truth["any_injury"] = np.max(np.stack([truth[t] for t in TARGET_CLASSES], axis=1), axis=1)
    return pd.DataFrame(truth, index=preds.index), pd.DataFrame(score, index=preds.index)


def plot_roc(
    labels: pd.DataFrame,
    predictions: pd.DataFrame | Mapping[str, pd.DataFrame],
    path: str | Path,
) -> Path:
    """ROC curve of every target (injured vs healthy) with its AUC.

    ``predictions`` is one prediction frame, or several by name (one curve each, e.g. one
    per backbone initialisation).
    """
    named = {"": predictions} if isinstance(predictions, pd.DataFrame) else dict(predictions)
    scored = {name: injury_scores(labels, frame) for name, frame in named.items()}
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    for ax, target in zip(axes.flat, SCORE_COLUMNS, strict=True):
        y = next(iter(scored.values()))[0][target].to_numpy()
        if len(np.unique(y)) < 2:
            ax.text(0.5, 0.5, "one class only", ha="center", va="center")
        else:
            for name, (truth, score) in scored.items():
                y, s = truth[target].to_numpy(), score[target].to_numpy()
                fpr, tpr, _ = roc_curve(y, s)
                label = f"{name} AUC {roc_auc_score(y, s):.3f}".strip()
                ax.plot(fpr, tpr, label=label)
            ax.legend(loc="lower right", fontsize=SMALLEST_FONT)
        ax.plot([0, 1], [0, 1], ":", color="gray")
        ax.set_title(f"{target} (n+={int(y.sum())}/{len(y)})")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
    return save_figure(fig, path)


def plot_confusion(labels: pd.DataFrame, predictions: pd.DataFrame, path: str | Path) -> Path:
    """Confusion matrices (healthy/low/high) of the three organ targets, argmax prediction."""
    preds = aggregate_predictions(predictions, "max").set_index("patient_id")
    labels = labels.set_index("patient_id").loc[preds.index]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, target in zip(axes, ORGAN_TARGETS, strict=True):
        cols = target_columns(target)
        true = labels[cols].to_numpy().argmax(axis=1)
        pred = preds[cols].to_numpy().argmax(axis=1)
        matrix = confusion_matrix(true, pred, labels=[0, 1, 2])
        image = ax.imshow(matrix, cmap="Blues")
        for (i, j), v in np.ndenumerate(matrix):
            ink = contrasting_text_color(image.cmap(image.norm(v)))
            ax.text(j, i, str(v), ha="center", va="center", color=ink)
        names = TARGET_CLASSES[target]
        ax.set_xticks(range(3), names)
        ax.set_yticks(range(3), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(target)
    return save_figure(fig, path)


def plot_calibration(
    labels: pd.DataFrame, predictions: pd.DataFrame, path: str | Path, bins: int = 8
) -> Path:
    """Reliability diagram of the injury probability of every target."""
    truth, score = injury_scores(labels, predictions)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect")
    for target in SCORE_COLUMNS:
        y = truth[target].to_numpy()
        if len(np.unique(y)) < 2:
            continue
        frac, mean = calibration_curve(
            y, score[target].to_numpy(), n_bins=bins, strategy="quantile"
        )
        ax.plot(mean, frac, marker="o", markersize=3, label=target)
    ax.set_xlabel("predicted injury probability")
    ax.set_ylabel("observed injury frequency")
    ax.legend(fontsize=SMALLEST_FONT)
    ax.set_title("calibration")
    return save_figure(fig, path)


def contrasting_text_color(background: tuple[float, ...]) -> str:
    """``"white"`` on a dark RGB(A) background, ``"black"`` on a light one.

    Dark means a relative luminance (Rec. 709 weights of the RGB values in ``[0, 1]``)
    below one half.
    """
    r, g, b = background[:3]
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else "black"


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close ``fig``; return ``path``.

    Offsets of the tick labels are switched off first (:func:`disable_offsets`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    disable_offsets(fig)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
