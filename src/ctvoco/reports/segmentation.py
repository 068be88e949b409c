"""The report of an organ segmentation run: Dice per organ, and slices to look at.

``dice.json`` and ``dice.md`` hold each organ's Dice on the validation series (the mean
over the series where the organ is labelled or predicted, see
:mod:`ctvoco.segment.dice`); ``segmentation.png`` shows, for a few validation series, the
slice with most organ voxels with its labelled and its predicted organs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from ctvoco.io.atomic import write_text_atomic
from ctvoco.io.masks import MASK_LABELS
from ctvoco.reports.plots import SMALLEST_FONT, save_figure

ORGAN_COLOURS = {
    "liver": "#d62728",
    "spleen": "#9467bd",
    "left_kidney": "#2ca02c",
    "right_kidney": "#17becf",
    "bowel": "#ff7f0e",
}

Example = tuple[str, np.ndarray, np.ndarray, np.ndarray]
"""``(series key, (H, W) uint8 image, (H, W) labels, (H, W) predicted labels)``."""


def write_segmentation_report(
    directory: str | Path,
    rows: Mapping[str, Mapping[str, float]],
    *,
    series: Sequence[str],
    checkpoint: str | None,
    examples: Sequence[Example] = (),
) -> Path:
    """Write ``dice.json``, ``dice.md`` and (with ``examples``) ``segmentation.png``.

    Args:
        directory: The run directory.
        rows: Per organ and ``mean``: ``dice``, ``dice_low``, ``dice_high`` (the validation
            Dice and its 95 % interval) and ``floor``, ``floor_low``, ``floor_high`` (the
            atlas floor's).
        series: The validation series the Dice was measured on.
        checkpoint: The weights measured (``None``: the final weights).
        examples: Slices to draw.

    Returns:
        The path of ``dice.md``.
    """
    directory = Path(directory)
    clean = {
        organ: {k: (None if math.isnan(v) else round(float(v), 4)) for k, v in row.items()}
        for organ, row in rows.items()
    }
    record = {"dice": clean, "series": list(series), "checkpoint": checkpoint}
    write_text_atomic(directory / "dice.json", json.dumps(record, indent=2))
    lines = [
        f"| {organ.replace('_', ' ')} | {_cell(row, 'dice')} | {_cell(row, 'floor')} |"
        for organ, row in clean.items()
    ]
    weights = "checkpoint " + Path(checkpoint).name if checkpoint else "final weights"
    text = "\n".join(
        [
            f"Dice per organ on {len(series)} validation series ({weights}): the mean over "
            "the series where the organ is labelled or predicted [95 % bootstrap interval "
            "over patients]; the floor is the atlas, each voxel's most frequent label in the "
            "training masks; - where the organ is in none.",
            "",
            "| organ | Dice | atlas floor |",
            "|---|---|---|",
            *lines,
            "",
        ]
    )
    path = directory / "dice.md"
    write_text_atomic(path, text)
    if examples:
        draw_examples(examples, directory / "segmentation.png")
    return path


def _cell(row: Mapping[str, float | None], name: str) -> str:
    """``0.912 [0.880, 0.940]``, or ``-``."""
    value = row.get(name)
    if value is None:
        return "-"
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    interval = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}{interval}"


def draw_examples(examples: Sequence[Example], path: str | Path) -> Path:
    """One row per example: the image, its labelled organs, its predicted organs."""
    colours = ["none"] * (1 + max(MASK_LABELS.values()))
    for name, label in MASK_LABELS.items():
        colours[label] = ORGAN_COLOURS[name]
    cmap = ListedColormap(["#00000000", *colours[1:]])
    legend_inches = 0.5
    height = 3.1 * len(examples) + legend_inches
    fig, axes = plt.subplots(len(examples), 3, figsize=(9.0, height), squeeze=False)
    for row, (key, image, mask, pred) in zip(axes, examples, strict=True):
        for ax, overlay, title in zip(
            row, (None, mask, pred), ("image", "labelled", "predicted"), strict=True
        ):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            if overlay is not None:
                shown = np.ma.masked_equal(overlay, 0)
                ax.imshow(
                    shown,
                    cmap=cmap,
                    vmin=0,
                    vmax=len(colours) - 1,
                    alpha=0.55,
                    interpolation="nearest",
                )
            ax.set_title(f"{key}: {title}", fontsize=SMALLEST_FONT + 1)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=ORGAN_COLOURS[name]) for name in MASK_LABELS]
    fig.legend(
        handles,
        [name.replace("_", " ") for name in MASK_LABELS],
        loc="lower center",
        ncol=len(MASK_LABELS),
        fontsize=SMALLEST_FONT + 1,
        frameon=False,
        handlelength=1.0,
        handleheight=1.0,
        columnspacing=2.0,
    )
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1))
    return save_figure(fig, path)
