"""The learning-curve plot is readable: the total loss apart, plain tick labels, legible text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ctvoco.training.history import plot_learning_curves
from tests.reports.figure_checks import offset_axes, saved_figures, small_texts

__all__ = ["saved_figures"]


def _history() -> pd.DataFrame:
    """A finetuning history: a weighted total loss far above its per-target parts."""
    return pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "train/loss": [9.0, 7.5, 6.0],
            "train/loss_bowel": [0.031, 0.030, 0.029],
            "train/loss_liver": [0.52, 0.41, 0.33],
            "val/loss": [8.0, 7.0, 6.5],
            "val/score": [1.0001, 1.0002, 1.0003],
        }
    )


def _axes_of(fig, label: str):
    return [ax for ax in fig.axes if label in [line.get_label() for line in ax.get_lines()]]


def test_total_loss_has_its_own_axes(tmp_path: Path, saved_figures) -> None:
    plot_learning_curves(_history(), ("loss", "score"), tmp_path / "curves.png")
    (fig,) = saved_figures
    (total,) = _axes_of(fig, "train/loss")
    assert _axes_of(fig, "val/loss") == [total]
    (parts,) = _axes_of(fig, "train/loss_bowel")
    assert parts is not total
    assert _axes_of(fig, "train/loss_liver") == [parts]
    _, high = parts.get_ylim()
    assert high < 1.0, f"the per-target losses are drawn on a 0-{high:.1f} scale"


def test_learning_curves_show_no_offset_and_legible_text(tmp_path: Path, saved_figures) -> None:
    plot_learning_curves(_history(), ("loss", "score"), tmp_path / "curves.png")
    (fig,) = saved_figures
    assert offset_axes(fig) == []
    assert small_texts(fig) == []


def test_learning_curves_go_to_tensorboard(tmp_path: Path) -> None:
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ctvoco.training.history import MetricsHistory
    from tests.training.test_history import fit

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    history = MetricsHistory(tmp_path / "run", plot_groups=("loss",))
    trainer = fit(history, epochs=2, logger=logger)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["learning_curves"]
    assert [e.step for e in events.Images("learning_curves")] == [trainer.global_step]
