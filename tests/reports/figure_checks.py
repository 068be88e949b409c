"""Helpers of the figure tests: catch the figures a function saves, and inspect their artists."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import ScalarFormatter

MIN_FONT_PT = 9.0
"""The smallest font a figure may use for what a reader has to read."""


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure saved while the test runs (``Figure.savefig`` still writes)."""
    figures: list[Figure] = []
    original = Figure.savefig

    def record(self: Figure, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def luminance(rgba: tuple[float, ...]) -> float:
    """Relative luminance (Rec. 709 weights) of an RGB(A) colour in [0, 1]."""
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def offset_axes(fig: Figure) -> list[str]:
    """``"<axes title>:x"`` / ``":y"`` of each numeric axis that may show an offset label."""
    found = []
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            formatter = axis.get_major_formatter()
            if isinstance(formatter, ScalarFormatter) and formatter.get_useOffset():
                found.append(f"{ax.get_title()}:{name}")
    return found


def visible_texts(fig: Figure) -> Iterator[Text]:
    """Every visible, non-empty text of ``fig`` (titles, labels, annotations, ticks, legends)."""
    fig.canvas.draw()
    for text in fig.findobj(Text):
        if text.get_visible() and text.get_text().strip() and _shown(text):
            yield text


def _shown(text: Text) -> bool:
    """False for texts of axes that are switched off (their tick labels are not drawn)."""
    axes = text.axes
    titles = (axes.title, axes._left_title, axes._right_title) if isinstance(axes, Axes) else ()
    return not isinstance(axes, Axes) or axes.axison or text in (*titles, *axes.texts)


def small_texts(fig: Figure, minimum: float = MIN_FONT_PT) -> list[str]:
    """``"text (size pt)"`` of every visible text smaller than ``minimum`` points."""
    return [
        f"{t.get_text()!r} ({t.get_fontsize():.1f} pt)"
        for t in visible_texts(fig)
        if t.get_fontsize() < minimum
    ]
