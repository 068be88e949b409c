"""``VoCoImageLogger``: every few validations, a figure of VoCo views and their overlaps.

At the first validation of a fit and then at every ``every_n_validations``-th, the callback
runs the model once more on the first validation batch (eval mode, no gradients: the same
embeddings the validation step scores), takes its first ``num_volumes`` volumes and draws :func:`~ctvoco.voco.figures.overlap_figure`. The figure is written atomically to
``<dirpath>/voco_overlaps_step<SSSSSSS>.png`` and sent to every attached logger that takes
images (TensorBoard, wandb). Only global rank zero draws; the sanity check and
``trainer.validate`` runs are never drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor

from ctvoco.errors import ArgumentError, UserError
from ctvoco.io.atomic import atomic_write
from ctvoco.training.history import log_image_file
from ctvoco.voco.figures import OverlapSample, overlap_figure
from ctvoco.voco.losses import similarity

FIGURE_PREFIX = "voco_overlaps_step"
"""The figures are ``<dirpath>/voco_overlaps_step<SSSSSSS>.png``, ``S`` the optimiser step."""


class VoCoImageLogger(pl.Callback):
    """Draw VoCo views with their true and predicted overlaps every few validations.

    Args:
        dirpath: Folder of the PNGs (``<run dir>/figures``); ``None``: ``figures`` in the
            trainer's ``default_root_dir``.
        every_n_validations: Draw at the first validation and then every ``N``-th
            (``0`` never draws).
        num_volumes: Volumes of the first validation batch drawn, one row each.
        max_views: Random views drawn per volume (the first ones of the sample).
        key: The image's tag in the loggers.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        every_n_validations: int = 5,
        num_volumes: int = 2,
        max_views: int = 4,
        key: str = "voco/overlaps",
    ) -> None:
        _check_count("every_n_validations", every_n_validations, minimum=0)
        _check_count("num_volumes", num_volumes, minimum=1)
        _check_count("max_views", max_views, minimum=1)
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.every_n_validations = int(every_n_validations)
        self.num_volumes = int(num_volumes)
        self.max_views = int(max_views)
        self.key = key
        self.validations = 0
        self.written: list[Path] = []
        self._due = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_validations and not callable(getattr(pl_module, "embed", None)):
            raise UserError(
                f"callbacks.voco_images draws VoCo pretraining samples; "
                f"{type(pl_module).__name__} is not a VoCo pretrainer (set "
                "callbacks.voco_images=null)"
            )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._due = self._counts(trainer) and self.is_due(self.validations)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._due or batch_idx != 0 or dataloader_idx != 0:
            return
        self._due = False
        if trainer.is_global_zero:
            self.draw(trainer, pl_module, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._counts(trainer):
            self.validations += 1
        self._due = False

    def is_due(self, validation: int) -> bool:
        """Whether validation number ``validation`` (0-based) of the fit is drawn."""
        return bool(self.every_n_validations) and validation % self.every_n_validations == 0

    def figure_path(self, trainer: pl.Trainer, step: int) -> Path:
        """``<dirpath>/voco_overlaps_step<SSSSSSS>.png``."""
        folder = self.dirpath or Path(trainer.default_root_dir) / "figures"
        return folder / f"{FIGURE_PREFIX}{step:07d}.png"

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: dict) -> Path:
        """Draw the figure of ``batch``, write its PNG and send it to the loggers."""
        samples = self.samples(pl_module, batch)
        step = trainer.global_step
        fig = overlap_figure(samples, title=f"VoCo views and overlaps: validation at step {step}")
        path = self.figure_path(trainer, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=100)
        plt.close(fig)
        self.written.append(path)
        log_image_file(trainer.loggers, self.key, path, step)
        return path

    def samples(self, pl_module: pl.LightningModule, batch: dict) -> list[OverlapSample]:
        """The first volumes of ``batch`` with their predicted overlaps, on the CPU."""
        v, k = self.num_volumes, self.max_views
        # The head normalises with the statistics of its whole batch: the model sees the
        # batch the validation step saw, and only then are the drawn volumes taken from it.
        predicted = predicted_overlaps(pl_module, batch["random"], batch["base"])[:v, :k]
        random, base = batch["random"][:v], batch["base"][:v]
        centers = batch.get("centers")
        return [
            OverlapSample(
                base=_numpy(base[i]),
                random=_numpy(random[i, :k]),
                targets=_numpy(batch["targets"][i, :k].float()),
                predicted=_numpy(predicted[i]),
                centers=None if centers is None else _numpy(centers[i, :k]),
            )
            for i in range(random.shape[0])
        ]

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))

    @staticmethod
    def _counts(trainer: pl.Trainer) -> bool:
        """Validations of a fit count; the sanity check and ``trainer.validate`` do not."""
        return not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING


def predicted_overlaps(pl_module: Any, random: Tensor, base: Tensor) -> Tensor:
    """``similarity(student(random), teacher(base))``, ``(B, K, N)``, in eval mode.

    The predicted overlaps the validation step scores; the module's training mode is
    restored afterwards.
    """
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            emb = pl_module.embed(random, base)
            return similarity(emb["student_random"], emb["teacher_base"]).float()
    finally:
        pl_module.train(was_training)


def _numpy(x: Tensor) -> Any:
    """A detached CPU numpy copy of ``x``."""
    return x.detach().cpu().numpy()


def _check_count(name: str, value: object, minimum: int) -> None:
    """Refuse a non-integer or a value below ``minimum`` for argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArgumentError(name, f" must be an integer >= {minimum}; got {value!r}")
