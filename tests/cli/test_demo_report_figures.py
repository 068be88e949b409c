"""The demo report's figures are readable, and it shows the latest VoCo pretraining figure."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from PIL import Image

from ctvoco.cli.demo import results_table
from ctvoco.cli.demo_report import write_demo_report
from ctvoco.labels import PREDICTION_COLUMNS, prevalence_predictions
from tests.cli.test_demo_report import LABELS, fake_run
from tests.reports.figure_checks import offset_axes, saved_figures, small_texts

__all__ = ["saved_figures"]

DEPTH = 8
"""Slices of every volume of :func:`fake_run`."""


def _report(tmp_path: Path) -> Path:
    paths = fake_run(tmp_path)
    good = LABELS[["patient_id", *PREDICTION_COLUMNS]].astype(float)
    good[list(PREDICTION_COLUMNS)] = good[list(PREDICTION_COLUMNS)].clip(0.05, 0.95)
    submissions = {"voco": good, "scratch": prevalence_predictions(LABELS, LABELS["patient_id"])}
    return write_demo_report(paths, LABELS, submissions, results_table(LABELS, submissions))


def _samples_figure(figures):
    """The figure of sample slices: the one whose axes show images."""
    (fig,) = [f for f in figures if any(ax.images for ax in f.axes)]
    return fig


def test_sample_slices_say_which_slice_they_show(tmp_path: Path, saved_figures) -> None:
    _report(tmp_path)
    fig = _samples_figure(saved_figures)
    shown = [ax for ax in fig.axes if ax.images]
    assert shown
    levels = set()
    for ax in shown:
        titles = " ".join(t.get_text() for t in (ax.title, ax._left_title, ax._right_title))
        found = re.search(rf"slice (\d+) of {DEPTH}\b", titles)
        assert found, f"no slice level in {titles!r}"
        levels.add(int(found.group(1)))
    assert len(levels) >= 2 and levels <= set(range(1, DEPTH + 1)), levels


def test_demo_figures_have_legible_text_and_no_offset(tmp_path: Path, saved_figures) -> None:
    _report(tmp_path)
    assert len(saved_figures) >= 4
    for fig in saved_figures:
        assert small_texts(fig) == []
        assert offset_axes(fig) == []


def test_report_shows_the_latest_voco_figure(tmp_path: Path) -> None:
    paths = fake_run(tmp_path)
    figures = paths.pretrain / "figures"
    figures.mkdir()
    Image.new("RGB", (40, 30), "red").save(figures / "voco_overlaps_step0000004.png")
    Image.new("RGB", (60, 30), "blue").save(figures / "voco_overlaps_step0000012.png")
    submissions = {"voco": prevalence_predictions(LABELS, LABELS["patient_id"])}
    report = write_demo_report(paths, LABELS, submissions, results_table(LABELS, submissions))

    text = report.read_text()
    links = re.findall(r"!\[[^\]]*\]\((voco[^)]*\.png)\)", text)
    assert len(links) == 1, text
    shown = report.parent / links[0]
    assert shown.read_bytes() == (figures / "voco_overlaps_step0000012.png").read_bytes()
    assert "step 12" in text


def test_report_without_voco_figures_links_none(tmp_path: Path) -> None:
    report = _report(tmp_path)
    assert "voco_overlaps" not in report.read_text()
    assert not list(report.parent.glob("voco*.png"))
    assert isinstance(pd.read_csv(report.parent / "results.csv"), pd.DataFrame)
