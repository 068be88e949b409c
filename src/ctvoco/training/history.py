"""Epoch-level metric history of a run (``metrics.csv``) and its learning-curve plots.

Works with any logger (or none): the history is read from the trainer's logged metrics at
the end of every training epoch and validation of a fit and rewritten atomically, so a run
that dies keeps its curves up to the last epoch. ``trainer.validate`` / ``test`` runs after
a fit neither add rows nor rewrite the file (loading a checkpoint for them restores this
callback's state as of that checkpoint, which must not replace the full history).

Training metrics are means over the epoch's steps (a per-step loss of one batch is too noisy
to plot); counters (``*_count``, ``*_steps``) and schedules (``*momentum``) keep their last
value. Validation metrics (``val/*``) are the values the module logged in that epoch's
validation; an epoch without a validation (``trainer.check_val_every_n_epoch`` > 1) has
them empty, never the previous validation's values again.

``metrics.csv`` is the run's one metrics table. ``logger=csv`` adds the per-step log of
:class:`StepCSVLogger` under ``csv/steps.csv``. ``learning_curves.png`` also goes to every
TensorBoard logger of the fit (:func:`log_image_file`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from ctvoco.figures import disable_offsets
from ctvoco.io.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VALIDATION_PREFIX = "val/"
"""Metrics whose names start with this are logged by validation, the others by training."""


class MetricsHistory(pl.Callback):
    """Write ``<dir>/metrics.csv`` (one row per epoch) and ``<dir>/learning_curves.png``.

    Args:
        directory: Where to write (the run directory).
        plot_groups: Metric-name substrings; each becomes one panel of the plot (metrics
            containing it, train and val together).
    """

    def __init__(self, directory: str | Path, plot_groups: Sequence[str] = ("loss",)) -> None:
        self.directory = Path(directory)
        self.plot_groups = tuple(plot_groups)
        self.rows: dict[int, dict[str, Any]] = {}
        self.sums: dict[str, list[float]] = {}  # this epoch's train/ metrics: [sum, count]

    @property
    def csv_path(self) -> Path:
        """``metrics.csv`` in the run directory."""
        return self.directory / "metrics.csv"

    @property
    def plot_path(self) -> Path:
        """``learning_curves.png`` in the run directory."""
        return self.directory / "learning_curves.png"

    def _record(self, trainer: pl.Trainer, validation: bool) -> None:
        """Copy this epoch's training (or validation) metrics into its row.

        ``trainer.callback_metrics`` keeps the last validation's values through the epochs
        that do not validate, so each phase takes only its own metrics.
        """
        # Only epochs of a fit: not the sanity check, and not a ``trainer.validate`` run
        # (after fit it would add a row for an epoch that never ran).
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        row = self.rows.setdefault(trainer.current_epoch, {"epoch": trainer.current_epoch})
        row["step"] = trainer.global_step
        for key, value in trainer.callback_metrics.items():
            if "/" in key and key.startswith(VALIDATION_PREFIX) == validation:
                number = float(value)
                if math.isfinite(number):
                    row[key] = number

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") and not is_state_metric(key):
                number = float(value)
                if math.isfinite(number):
                    total = self.sums.setdefault(key, [0.0, 0.0])
                    total[0] += number
                    total[1] += 1

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer, validation=False)
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            row = self.rows[trainer.current_epoch]
            for key, (total, count) in self.sums.items():
                if count:
                    row[key] = total / count
        self.sums = {}
        self.write()

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the module's own on_validation_epoch_end, so that metrics it logs there
        # (the competition score, the position error) are in callback_metrics.
        if trainer.state.fn == TrainerFn.FITTING:
            self._record(trainer, validation=True)
            self.write()

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write()
        if len(self.rows) >= 1:
            plot_learning_curves(self.frame(), self.plot_groups, self.plot_path)
            log_image_file(
                trainer.loggers,
                "learning_curves",
                self.plot_path,
                trainer.global_step,
                to=("tensorboard",),
            )

    def frame(self) -> pd.DataFrame:
        """The history so far, one row per epoch."""
        return pd.DataFrame([self.rows[e] for e in sorted(self.rows)])

    def write(self) -> None:
        """Rewrite ``metrics.csv`` atomically."""
        if not self.rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.csv_path, "w") as handle:
            self.frame().to_csv(handle, index=False)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "sums": self.sums}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = {int(k): v for k, v in state_dict.get("rows", {}).items()}
        self.sums = {k: list(v) for k, v in state_dict.get("sums", {}).items()}


def is_state_metric(name: str) -> bool:
    """Counters and schedules: their last value is the epoch's value, not their mean."""
    return name.endswith(("_count", "_steps", "momentum"))


SMALLEST_FONT = 9.0
"""Points: the smallest text of the learning curves (legends included)."""


def learning_curve_panels(
    history: pd.DataFrame, groups: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """``(title, columns)`` of every panel of :func:`plot_learning_curves`.

    A group is the metrics whose names contain it. The group's total (the metric named just
    the group, e.g. ``train/loss`` and ``val/loss`` for ``loss``) gets a panel of its own
    when the group has other metrics too (``train/loss_liver``), whose scale it would
    otherwise flatten. Without any matching group: one panel of every metric.
    """
    panels: list[tuple[str, list[str]]] = []
    for group in groups:
        columns = [c for c in history.columns if group in c]
        totals = [c for c in columns if c.split("/", 1)[-1] == group]
        parts = [c for c in columns if c not in totals]
        if totals and parts:
            panels += [(f"{group} (total)", totals), (f"{group} (parts)", parts)]
        elif columns:
            panels.append((group, columns))
    return panels or [("metrics", [c for c in history.columns if "/" in c])]


def learning_curves_figure(history: pd.DataFrame, groups: Sequence[str]) -> Figure:
    """The learning curves of ``history`` (see :func:`learning_curve_panels`), not saved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = learning_curve_panels(history, groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, columns) in zip(axes[0], panels, strict=True):
        for column in columns:
            series = history[["epoch", column]].dropna()
            style = "--" if column.startswith("train/") else "-"
            ax.plot(series["epoch"], series[column], style, marker="o", markersize=3, label=column)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=SMALLEST_FONT)
    disable_offsets(fig)
    fig.tight_layout()
    return fig


def plot_learning_curves(history: pd.DataFrame, groups: Sequence[str], path: Path) -> Path:
    """Write :func:`learning_curves_figure` as a PNG (atomically); returns ``path``."""
    import matplotlib.pyplot as plt

    fig = learning_curves_figure(history, groups)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path


IMAGE_LOGGERS = ("tensorboard", "wandb")
"""The experiment loggers that take images."""


def log_image_file(
    loggers: Iterable[Any],
    key: str,
    path: Path,
    step: int,
    to: Sequence[str] = IMAGE_LOGGERS,
) -> list[str]:
    """Send the PNG at ``path`` to every attached logger that takes images.

    TensorBoard gets it as an image event (``add_image``) and wandb through ``log_image``
    (skipped when the wandb run is disabled); other loggers are left alone.

    Args:
        loggers: The trainer's loggers.
        key: The image's tag (``voco/overlaps``).
        path: The PNG written before.
        step: The optimiser step it belongs to.
        to: Which kinds of :data:`IMAGE_LOGGERS` to send it to.

    Returns:
        The kinds of the loggers that took it, one entry per logger.
    """
    took = []
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and "tensorboard" in to:
            logger.experiment.add_image(key, _png_pixels(path), step, dataformats="HWC")
            took.append("tensorboard")
        elif isinstance(logger, WandbLogger) and "wandb" in to:
            if getattr(logger.experiment, "disabled", False):
                continue
            logger.log_image(key=key, images=[str(path)], step=step, caption=[path.stem])
            took.append("wandb")
    return took


def _png_pixels(path: Path) -> np.ndarray:
    """The RGB pixels of a PNG, ``(H, W, 3)`` uint8."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class _StepsWriter(ExperimentWriter):
    """Lightning's CSV writer, saving its rows as ``steps.csv``."""

    NAME_METRICS_FILE = "steps.csv"


class StepCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` writing ``<save_dir>/<name>/<version>/steps.csv``.

    Its rows are what the trainer logs, every ``trainer.log_every_n_steps`` steps and at
    each validation; the run directory's ``metrics.csv`` (:class:`MetricsHistory`) stays the
    run's one file of that name.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer of ``steps.csv`` and ``hparams.yaml``, created on first use."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _StepsWriter(log_dir=self.log_dir)
        return self._experiment
