"""Figures of VoCo samples: where the views lie, and the overlaps predicted against the true ones.

One row per volume, drawn from a validation batch (docs/pretraining.md, Logged images):

- the base image: the middle slice of the canvas rebuilt from the ``n x n`` base crops, with
  the grid, each cell's index ``j`` and every random view's outline drawn on it;
- each random view at that slice, its outline colour in the title;
- the true overlap targets ``y[k, j]`` and the predicted overlaps (the similarities of the
  student's view embeddings to the teacher's base-crop embeddings), side by side as heatmaps
  on one ``[0, 1]`` colour scale, one row per view and one column per base cell.

Pure drawing: numpy arrays in, a Matplotlib ``Figure`` out; nothing is saved here.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ctvoco.figures import disable_offsets

SMALLEST_FONT = 9.0
"""Points: no text of these figures is smaller."""

HEATMAP_CMAP = "viridis"
VIEW_COLORS = ("tab:orange", "tab:cyan", "tab:pink", "tab:olive", "tab:red", "tab:purple")
MAX_ANNOTATED_CELLS = 64
"""Heatmaps with more cells than this carry no numbers (they would not be legible)."""


@dataclass(frozen=True)
class OverlapSample:
    """What the figure of one volume needs, as numpy arrays.

    Attributes:
        base: ``(N, S, C, r, r)`` uint8 base crops, cell ``j = n*row + col``.
        random: ``(K, S, C, r, r)`` uint8 random views.
        targets: ``(K, N)`` true overlaps.
        predicted: ``(K, N)`` predicted overlaps.
        centers: ``(K, 2)`` integer ``(row, col)`` view centres on the canvas, or ``None``
            (no outlines are drawn then).
    """

    base: np.ndarray
    random: np.ndarray
    targets: np.ndarray
    predicted: np.ndarray
    centers: np.ndarray | None = None

    @property
    def grid(self) -> int:
        """``n``: the base crops form an ``n x n`` grid."""
        n = round(float(np.sqrt(self.base.shape[0])))
        if n * n != self.base.shape[0]:
            raise ValueError(f"base must hold n*n crops; got {self.base.shape[0]}")
        return n

    @property
    def crop_size(self) -> int:
        """``r``: the side of every crop in pixels."""
        return int(self.base.shape[-1])

    @property
    def num_slices(self) -> int:
        """``S``: slices per crop."""
        return int(self.base.shape[1])

    def canvas(self, level: int) -> np.ndarray:
        """Slice ``level`` of the canvas, ``(n*r, n*r)``, put together from the base crops."""
        n, r = self.grid, self.crop_size
        cells = self.base[:, level, 0]  # (N, r, r)
        return cells.reshape(n, n, r, r).transpose(0, 2, 1, 3).reshape(n * r, n * r)


def overlap_figure(samples: list[OverlapSample], title: str = "") -> Figure:
    """One row per sample: base image with grid and views, the views, true and predicted overlaps.

    Args:
        samples: The volumes to draw (all of the same geometry).
        title: The figure's title (e.g. the training step).

    Returns:
        The figure, with ``2 + K`` axes per row (``K`` views of the first sample).
    """
    if not samples:
        raise ValueError("overlap_figure needs at least one sample")
    views = samples[0].random.shape[0]
    columns = 3 + views
    widths = [1.6] + [1.0] * views + [1.6, 1.6]
    fig, axes = plt.subplots(
        len(samples),
        columns,
        figsize=(2.4 * sum(widths), 3.4 * len(samples)),
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    for row, (sample, row_axes) in enumerate(zip(samples, axes, strict=True)):
        level = sample.num_slices // 2
        _draw_canvas(row_axes[0], sample, level, f"volume {row + 1}: ")
        for k, ax in enumerate(row_axes[1 : 1 + views]):
            _draw_view(ax, sample, k, level)
        _draw_overlaps(row_axes[-2], sample.targets, "true overlap")
        _draw_overlaps(row_axes[-1], sample.predicted, "predicted overlap")
    if title:
        fig.suptitle(title, fontsize=SMALLEST_FONT + 2)
    disable_offsets(fig)
    fig.tight_layout()
    return fig


def _draw_canvas(ax: Axes, sample: OverlapSample, level: int, prefix: str) -> None:
    """The base image of slice ``level`` with the grid, cell indices and view outlines."""
    n, r = sample.grid, sample.crop_size
    ax.imshow(sample.canvas(level), cmap="gray", vmin=0, vmax=255)
    for j in range(n * n):
        row, col = divmod(j, n)
        ax.add_patch(
            Rectangle((col * r - 0.5, row * r - 0.5), r, r, fill=False, edgecolor="yellow", lw=1.0)
        )
        ax.text(
            col * r + 1,
            row * r + 1,
            str(j),
            color="yellow",
            fontsize=SMALLEST_FONT,
            ha="left",
            va="top",
        )
    if sample.centers is not None:
        for k, (cy, cx) in enumerate(np.asarray(sample.centers)[: sample.random.shape[0]]):
            y0, x0 = int(cy) - r // 2, int(cx) - r // 2
            ax.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), r, r, fill=False, edgecolor=view_color(k), lw=2.0)
            )
    ax.set_title(
        f"{prefix}base crops, slice {level + 1} of {sample.num_slices}", fontsize=SMALLEST_FONT
    )
    ax.set_axis_off()


def _draw_view(ax: Axes, sample: OverlapSample, k: int, level: int) -> None:
    """Random view ``k`` at slice ``level``, titled in its outline's colour."""
    ax.imshow(sample.random[k, level, 0], cmap="gray", vmin=0, vmax=255)
    ax.set_title(
        f"view {k + 1}\nslice {level + 1} of {sample.num_slices}",
        fontsize=SMALLEST_FONT,
        color=view_color(k),
    )
    ax.set_axis_off()


def _draw_overlaps(ax: Axes, values: np.ndarray, title: str) -> None:
    """A ``(K, N)`` overlap matrix as a heatmap on ``[0, 1]``, numbers in contrasting ink."""
    values = np.asarray(values, dtype=float)
    image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=0.0, vmax=1.0, aspect="auto")
    if values.size <= MAX_ANNOTATED_CELLS:
        for (k, j), value in np.ndenumerate(values):
            ink = contrasting_text_color(image.cmap(image.norm(value)))
            ax.text(
                j, k, f"{value:.2f}", ha="center", va="center", fontsize=SMALLEST_FONT, color=ink
            )
    views, cells = values.shape
    ax.set_xticks(range(cells), [str(j) for j in range(cells)], fontsize=SMALLEST_FONT)
    ax.set_yticks(range(views), [str(k + 1) for k in range(views)], fontsize=SMALLEST_FONT)
    ax.set_xlabel("base cell", fontsize=SMALLEST_FONT)
    ax.set_ylabel("view", fontsize=SMALLEST_FONT)
    ax.set_title(title, fontsize=SMALLEST_FONT + 1)


def view_color(k: int) -> str:
    """The outline and title colour of view ``k``."""
    return VIEW_COLORS[k % len(VIEW_COLORS)]


def contrasting_text_color(background: tuple[float, ...]) -> str:
    """``"white"`` on a dark RGB(A) background (Rec. 709 luminance < 0.5), else ``"black"``."""
    r, g, b = background[:3]
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else "black"
