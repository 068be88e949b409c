"""The evaluation plots are readable: contrasting cell numbers, plain tick labels, legible text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgba

from ctvoco.labels import labels_from_classes
from ctvoco.reports import plot_calibration, plot_confusion, plot_roc
from tests.reports.figure_checks import luminance, offset_axes, saved_figures, small_texts
from tests.reports.test_plots import PATIENTS, _labels, _predictions

__all__ = ["saved_figures"]


def _mostly_healthy() -> tuple:
    """Labels with many healthy livers, so that one confusion cell is much darker than others."""
    patients = [*PATIENTS, *range(30, 50)]
    classes = np.zeros((len(patients), 5), dtype=int)
    classes[:3, 3] = 2
    labels = labels_from_classes(patients, classes)
    predictions = labels[["patient_id"]].copy()
    for column in labels.columns:
        if column.endswith(("_healthy", "_low", "_high", "_injury")) and column != "any_injury":
            predictions[column] = labels[column].astype(float) * 0.8 + 0.1
    return labels, predictions


def test_confusion_numbers_contrast_with_their_cells(tmp_path: Path, saved_figures) -> None:
    labels, predictions = _mostly_healthy()
    plot_confusion(labels, predictions, tmp_path / "confusion.png")
    (fig,) = saved_figures
    checked = {"dark": 0, "light": 0}
    for ax in fig.axes:
        image = ax.images[0]
        matrix = image.get_array()
        for text in ax.texts:
            col, row = (round(v) for v in text.get_position())
            cell = luminance(image.cmap(image.norm(matrix[row, col])))
            ink = luminance(to_rgba(text.get_color()))
            kind = "dark" if cell < 0.5 else "light"
            checked[kind] += 1
            assert abs(cell - ink) > 0.4, (
                f"{ax.get_title()} cell ({row}, {col}) = {text.get_text()}: text luminance "
                f"{ink:.2f} on a {kind} cell of luminance {cell:.2f}"
            )
    assert checked["dark"] and checked["light"], checked


def test_no_axis_shows_an_offset(tmp_path: Path, saved_figures) -> None:
    plot_roc(_labels(), _predictions(), tmp_path / "roc.png")
    plot_confusion(_labels(), _predictions(), tmp_path / "confusion.png")
    plot_calibration(_labels(), _predictions(), tmp_path / "calibration.png")
    assert len(saved_figures) == 3
    for fig in saved_figures:
        assert offset_axes(fig) == []


def test_evaluation_text_is_at_least_nine_points(tmp_path: Path, saved_figures) -> None:
    plot_roc(_labels(), {"a": _predictions(0), "b": _predictions(1)}, tmp_path / "roc.png")
    plot_confusion(_labels(), _predictions(), tmp_path / "confusion.png")
    plot_calibration(_labels(), _predictions(), tmp_path / "calibration.png")
    for fig in saved_figures:
        assert small_texts(fig) == []
