"""``VoCoPretrainer``: the LightningModule of 2D VoCo pretraining (docs/algorithms.md §2).

The module is thin: networks are a :class:`~ctvoco.models.backbone.SliceEncoder` and a
:class:`~ctvoco.voco.heads.ProjectionHead` per branch, the math is in
:mod:`ctvoco.voco.losses`, :mod:`ctvoco.voco.ema` and :mod:`ctvoco.voco.position`.

Teacher handling:

- ``teacher_head="ema"`` (default): the whole teacher (backbone and head) follows the
  student by EMA after each optimiser step, momentum ``m`` optionally on a cosine schedule
  towards 1; nothing of the teacher is trained by gradient.
- ``teacher_head="trained"`` (research code): only the teacher backbone is EMA'd; the
  teacher head is trained by gradient through the intra-volume loss.

The teacher's backbone always runs under ``torch.no_grad()``. The grid, crop size and
random-crop count come from the :class:`~ctvoco.voco.views.VoCoViews` that make the samples;
the optimiser and LR schedule are partials built by
:class:`~ctvoco.training.optim.StepOptimization`; throughput and non-finite losses are
watched by callbacks (:meth:`VoCoPretrainer.configure_callbacks`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import GradClipAlgorithmType
from torch import Tensor

from ctvoco.errors import ArgumentError, look_up_option
from ctvoco.models.backbone import SliceEncoder, create_backbone
from ctvoco.training.guards import NonFiniteGuard, NonFiniteMonitor
from ctvoco.training.optim import PartialSpec, StepOptimization
from ctvoco.training.schedules import stepping_batches
from ctvoco.training.throughput import ThroughputMonitor
from ctvoco.voco.ema import cosine_momentum, update_momentum
from ctvoco.voco.heads import DROPOUT_PLACES, ProjectionHead, SliceDropout
from ctvoco.voco.losses import VoCoLoss, VoCoLossOutput, similarity
from ctvoco.voco.position import position_errors
from ctvoco.voco.views import MODEL_GEOMETRY, VoCoViews

log = logging.getLogger(__name__)

TEACHER_HEADS = ("ema", "trained")
MOMENTUM_SCHEDULES = ("constant", "cosine")
INTER_PAIRINGS = ("local", "global")

DEFAULT_OPTIMIZER: Mapping[str, Any] = {
    "_target_": "torch.optim.AdamW",
    "lr": 1e-4,
    "weight_decay": 0.01,
    "amsgrad": True,
    "foreach": True,
}
"""The optimiser of ``optimizer=None`` (``model=voco``'s ``model.module.optimizer``)."""

DEFAULT_SCHEDULER: Mapping[str, Any] = {
    "_target_": "ctvoco.training.schedules.WarmupCosine",
    "warmup_steps": 5000,
    "min_lr_ratio": 0.0,
    "schedule_steps": None,
}
"""The LR schedule of ``scheduler=None`` (``model=voco``'s ``model.module.scheduler``)."""


class VoCoPretrainer(pl.LightningModule):
    """Student/teacher VoCo pretraining of any timm backbone on CT slices.

    Args:
        backbone: timm model name (``in_chans`` channels).
        in_chans: Input channels of the slices.
        init: Backbone init, ``random`` or ``imagenet`` (local weights only).
        weights_dir: Folder with local ImageNet weights.
        pooling: ``avg`` or ``flatten`` (research code; ties the head to the crop size).
        views: The views that make the training samples (a :class:`VoCoViews` or its
            fields as a mapping): their ``grid`` ``n``, ``crop_size`` ``r`` and
            ``num_random`` ``K`` shape the model. ``None``: ``VoCoViews()``.
        head_hidden: Projection head width.
        head_out: Embedding size.
        head_norm: ``batch`` (correct) or ``per_slot`` (the research code's BatchNorm of
            each crop slot).
        teacher_head: ``ema`` or ``trained`` (see the module docstring).
        momentum: EMA momentum ``m`` (start value with the cosine schedule).
        momentum_schedule: ``constant`` or ``cosine`` (towards 1 at the last step).
        dropout: Dropout on student features before the head.
        w_intra: Weight of the intra-volume (position) loss.
        w_inter: Weight of the inter-volume (consistency) loss.
        w_reg: Weight of the base-crop regularisation.
        inter_pairing: ``local`` (partner in the same process batch) or ``global`` (partners
            from the batch gathered over all DDP ranks, ``VoCoLoss(gather_distributed=True)``).
        optimizer: ``optimizer(params)`` builds the optimiser (a partial, e.g. Hydra's
            ``_partial_: true``); ``None``: :data:`DEFAULT_OPTIMIZER`.
        scheduler: ``scheduler()`` builds the per-step LR factor; ``None``:
            :data:`DEFAULT_SCHEDULER` (warm-up, then a cosine; its ``schedule_steps`` is
            the step at which the cosine ends, ``None``: the run length).
        max_nonfinite: Non-finite losses tolerated before training stops.
        channels_last: Run the encoders in channels-last memory format.
        compile: ``torch.compile`` the encoders (opt-in).
        dropout_at: ``crop`` (dropout on the slice mean) or ``slice`` (on every slice's
            features before the mean, research code); see :class:`~ctvoco.voco.heads.SliceDropout`.
        intra_symmetric: Intra-volume term from both sides (the research code's V1 head); see
            :func:`~ctvoco.voco.losses.symmetric_intra_volume_loss`.
        gradient_clip_val: Gradient-norm clipping of this module, replacing the trainer's
            ``gradient_clip_val``; ``0`` never clips; ``None``: the trainer's setting.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_b0",
        in_chans: int = 1,
        init: str = "random",
        weights_dir: str | None = None,
        pooling: str = "avg",
        views: VoCoViews | Mapping[str, Any] | None = None,
        head_hidden: int = 2048,
        head_out: int = 2048,
        head_norm: str = "batch",
        teacher_head: str = "ema",
        momentum: float = 0.99,
        momentum_schedule: str = "cosine",
        dropout: float = 0.2,
        w_intra: float = 1.0,
        w_inter: float = 1.0,
        w_reg: float = 1.0,
        inter_pairing: str = "local",
        optimizer: PartialSpec | None = None,
        scheduler: PartialSpec | None = None,
        max_nonfinite: int = 10,
        channels_last: bool = False,
        compile: bool = False,
        dropout_at: str = "crop",
        intra_symmetric: bool = False,
        gradient_clip_val: float | None = None,
    ) -> None:
        self.optimization = StepOptimization(
            optimizer,
            scheduler,
            default_optimizer=DEFAULT_OPTIMIZER,
            default_scheduler=DEFAULT_SCHEDULER,
        )
        super().__init__()
        self.views = _as_views(views)
        self.save_hyperparameters(ignore=["views", "optimizer", "scheduler"])
        # The views' fields rebuild the module from a checkpoint; the geometry is recorded
        # flat too, for the data modules to check their own views against.
        self.hparams.update(views=dataclasses.asdict(self.views), **self.optimization.hparams())
        self.hparams.update({key: getattr(self.views, key) for key in MODEL_GEOMETRY})
        look_up_option("teacher_head", teacher_head, TEACHER_HEADS)
        look_up_option("momentum_schedule", momentum_schedule, MOMENTUM_SCHEDULES)
        look_up_option("inter_pairing", inter_pairing, INTER_PAIRINGS)
        look_up_option("dropout_at", dropout_at, DROPOUT_PLACES)
        _check_clip(gradient_clip_val)
        if not 0.0 <= momentum <= 1.0:
            raise ArgumentError("momentum", f"={momentum} must be in [0, 1]")
        if min(w_intra, w_inter, w_reg) < 0 or not (w_intra or w_inter or w_reg):
            raise ArgumentError(
                "w_intra",
                f"={w_intra}, w_inter={w_inter}, w_reg={w_reg}: the loss weights must be "
                ">= 0 and not all 0",
            )
        slots = self.views.num_random + self.views.grid**2
        crop = self.views.crop_size
        self.student_encoder = SliceEncoder(
            create_backbone(backbone, in_chans=in_chans, init=init, weights_dir=weights_dir),  # type: ignore[arg-type]
            pooling=pooling,
            input_size=(crop, crop),
        )
        features = self.student_encoder.out_features
        self.student_head = ProjectionHead(
            features, head_hidden, head_out, norm=head_norm, num_slots=slots
        )  # type: ignore[arg-type]
        self.teacher_encoder = copy.deepcopy(self.student_encoder)
        self.teacher_head = copy.deepcopy(self.student_head)
        self.teacher_encoder.requires_grad_(False)
        self.teacher_head.requires_grad_(teacher_head == "trained")
        self.dropout = SliceDropout(dropout, dropout_at)  # type: ignore[arg-type]
        self.criterion = VoCoLoss(
            w_intra,
            w_inter,
            w_reg,
            detach_teacher=teacher_head == "ema",
            intra_symmetric=intra_symmetric,
            gather_distributed=inter_pairing == "global",
        )
        self.guard = NonFiniteGuard(max_nonfinite)
        self.nonfinite = NonFiniteMonitor(self.guard, "targets", log_count_every_step=True)
        if channels_last:
            self.student_encoder.to(memory_format=torch.channels_last)
            self.teacher_encoder.to(memory_format=torch.channels_last)
        # Compiled views of the encoders, kept out of the module tree (no duplicate weights).
        self._compiled: dict[str, Any] = (
            {
                "student": torch.compile(self.student_encoder),
                "teacher": torch.compile(self.teacher_encoder),
            }
            if compile
            else {}
        )
        self._val_sims: list[Tensor] = []
        self._val_targets: list[Tensor] = []
        self._val_index: list[Tensor] = []
        self._run_steps: int | None = None

    # -- embeddings ---------------------------------------------------------------------
    def _slices(self, crops: Tensor) -> Tensor:
        """``(B, M, S, C, r, r)`` uint8 -> ``(B*M*S, C, r, r)`` float in [0, 1]."""
        x = crops.flatten(0, 2).to(dtype=torch.float32).div_(255.0)
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def slice_features(self, crops: Tensor, teacher: bool = False) -> Tensor:
        """Encoder features of every slice of every crop.

        Args:
            crops: ``(B, M, S, C, r, r)`` uint8 crops.
            teacher: Use the teacher encoder (under ``no_grad``).

        Returns:
            ``(B, M, S, d)`` float32.
        """
        b, m, s = crops.shape[:3]
        if teacher:
            with torch.no_grad():
                feats = self._compiled.get("teacher", self.teacher_encoder)(self._slices(crops))
        else:
            feats = self._compiled.get("student", self.student_encoder)(self._slices(crops))
        return feats.float().view(b, m, s, -1)

    def crop_features(self, crops: Tensor, teacher: bool = False) -> Tensor:
        """Mean encoder features of each crop over its slices, ``(B, M, d)`` float32."""
        return self.slice_features(crops, teacher=teacher).mean(dim=2)

    def embed(self, random: Tensor, base: Tensor) -> dict[str, Tensor]:
        """Student and teacher embeddings of random and base crops.

        Args:
            random: ``(B, K, S, C, r, r)``.
            base: ``(B, N, S, C, r, r)``.

        Returns:
            ``student_random``/``teacher_random`` ``(B, K, D)``, ``student_base``/``teacher_base``
            ``(B, N, D)``.
        """
        k = random.shape[1]
        crops = torch.cat([random, base], dim=1)
        # slice mean with dropout before or after it (dropout_at)
        student = self.student_head(self.dropout(self.slice_features(crops)))
        teacher_feats = self.crop_features(crops, teacher=True)
        if self.hparams.teacher_head == "trained":
            teacher = self.teacher_head(teacher_feats)
        else:
            with torch.no_grad():
                teacher = self.teacher_head(teacher_feats)
        return {
            "student_random": student[:, :k],
            "student_base": student[:, k:],
            "teacher_random": teacher[:, :k],
            "teacher_base": teacher[:, k:],
        }

    # -- training -----------------------------------------------------------------------
    def losses(self, emb: dict[str, Tensor], targets: Tensor) -> VoCoLossOutput:
        """The weighted VoCo losses; inter-volume partners may come from other ranks."""
        return self.criterion(
            emb["student_random"],
            emb["student_base"],
            emb["teacher_random"],
            emb["teacher_base"],
            targets,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        emb = self.embed(batch["random"], batch["base"])
        out = self.losses(emb, batch["targets"].float())
        if not self.nonfinite.loss_is_finite(self, out.total, _describe(out)):
            return None
        size = batch["targets"].shape[0]
        self.log_dict(
            {
                "train/loss": out.total,
                "train/intra": out.intra,
                "train/inter": out.inter,
                "train/reg": out.reg,
            },
            batch_size=size,
        )
        self.log("loss", out.total, prog_bar=True, logger=False, batch_size=size)
        return out.total

    def configure_callbacks(self) -> list[pl.Callback]:
        """Throughput (``train/volumes_per_s``) and the non-finite loss policy."""
        return [ThroughputMonitor("targets"), self.nonfinite]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        size = batch["targets"].shape[0]
        self.log("train/ema_momentum", self.current_momentum(), batch_size=size)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Any = None,
    ) -> None:
        """Step the optimiser, then move the teacher towards the student (EMA).

        Two kinds of step change no weights and leave the teacher alone too (see
        :class:`~ctvoco.training.guards.NonFiniteMonitor`): the loss was not finite
        (``training_step`` returned ``None``), or the fp16 gradient scaler (``16-mixed``)
        skipped ``optimizer.step()`` for overflowing gradients. Lightning still counts both
        in ``global_step``.
        """
        # runs the closure, i.e. training_step and backward
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if not self.nonfinite.step_taken:
            return
        m = self.current_momentum()
        update_momentum(self.student_encoder, self.teacher_encoder, m)
        if self.hparams.teacher_head == "ema":
            update_momentum(self.student_head, self.teacher_head, m)

    def current_momentum(self) -> float:
        """EMA momentum at the current optimiser step."""
        base = float(self.hparams.momentum)
        if self.hparams.momentum_schedule == "constant":
            return base
        total = max(1, int(self._total_steps()))
        return cosine_momentum(self.global_step, total, base=base, final=1.0)

    def _total_steps(self) -> int:
        if self._run_steps is None:
            self._run_steps = stepping_batches(self.trainer)
        return self._run_steps

    def on_train_start(self) -> None:
        # The run length is read here, after a checkpoint restore (see WarmupCosine).
        self._run_steps = self.optimization.start(self.trainer)
        warmup = self.optimization.warmup_steps
        if warmup >= self._run_steps:
            log.warning(
                "warmup_steps=%d >= total steps %d: the run never leaves warm-up",
                warmup,
                self._run_steps,
            )

    def configure_optimizers(self) -> dict[str, Any]:
        return self.optimization.configure(self)

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by the module's ``gradient_clip_val`` when it has one, else as the trainer says.

        A module value (``0``: never clip) replaces the trainer's ``gradient_clip_val``, so a
        model preset can carry its clipping (the research code never clipped). It clips the
        gradient norm through the precision plugin, after fp16 gradients were unscaled.
        """
        own = self.hparams.get("gradient_clip_val")
        if own is None:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
            return
        self.trainer.precision_plugin.clip_gradients(
            optimizer, float(own), GradClipAlgorithmType.NORM
        )

    # -- validation: does the model know positions? ----------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        emb = self.embed(batch["random"], batch["base"])
        targets = batch["targets"].float()
        out = self.losses(emb, targets)
        size = targets.shape[0]
        self.log_dict(
            {
                "val/loss": out.total,
                "val/intra": out.intra,
                "val/inter": out.inter,
                "val/reg": out.reg,
            },
            batch_size=size,
            sync_dist=True,
        )
        sims = similarity(emb["student_random"], emb["teacher_base"])
        self._val_sims.append(sims.detach().float())
        self._val_targets.append(targets.detach())
        index = batch.get("index")
        self._val_index.append(
            torch.as_tensor(index, device=sims.device)
            if index is not None
            else torch.full((size,), -1, device=sims.device)
        )

    def on_validation_epoch_end(self) -> None:
        if not self._val_sims:
            return
        sims = torch.cat(self._val_sims)
        targets = torch.cat(self._val_targets)
        index = torch.cat(self._val_index)
        self._val_sims.clear()
        self._val_targets.clear()
        self._val_index.clear()
        if self.trainer.world_size > 1:
            sims, targets = unique_gathered(
                self.all_gather(sims), self.all_gather(targets), self.all_gather(index)
            )
        errors = position_errors(sims, targets)
        self.log_dict(
            {
                "val/position_mae": errors["mae"],
                "val/position_mae_baseline": errors["baseline_mae"],
                "val/position_mae_trivial": errors["trivial_mae"],
                "val/position_mae_zeros": errors["zeros_mae"],
                "val/position_mae_cell_prior": errors["cell_prior_mae"],
                "val/position_rank_corr": errors["rank_corr"],
                "val/position_rank_corr_baseline": errors["baseline_rank_corr"],
            },
            rank_zero_only=True,
        )

    # -- checkpoint state ----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nonfinite_guard"] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.guard.load_state_dict(checkpoint.get("nonfinite_guard", {}))


def unique_gathered(sims: Tensor, targets: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Validation results gathered from all ranks, each volume once.

    A ``DistributedSampler`` pads the last round with repeats of the first indices so that
    every rank gets the same number of volumes; scoring those twice would weight them
    double. Rank-major order, first occurrence kept.

    Args:
        sims: ``(W, N, K, n²)`` gathered similarities (``W`` ranks, ``N`` volumes each).
        targets: ``(W, N, K, n²)`` gathered overlap targets.
        index: ``(W, N)`` gathered dataset indices (``-1``: unknown, always kept).

    Returns:
        ``sims`` and ``targets`` of shape ``(U, K, n²)``, ``U`` the number of distinct volumes.
    """
    keep = first_occurrences(index.flatten(0, 1))
    return sims.flatten(0, 1)[keep], targets.flatten(0, 1)[keep]


def first_occurrences(index: Tensor) -> Tensor:
    """Positions of the first occurrence of each value (``-1`` entries are all kept).

    Args:
        index: ``(N,)`` integer dataset indices; negative means unknown.

    Returns:
        ``(U,)`` int64 positions into ``index``, increasing, on ``index``'s device.
    """
    seen: set[int] = set()
    keep = []
    for position, value in enumerate(index.tolist()):
        if value < 0 or value not in seen:
            keep.append(position)
            seen.add(value)
    return torch.as_tensor(keep, dtype=torch.long, device=index.device)


def _check_clip(value: object) -> None:
    """``gradient_clip_val`` must be ``None`` or a number >= 0."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is not None and not (number and value >= 0):  # type: ignore[operator]
        raise ArgumentError(
            "gradient_clip_val",
            f" must be null (the trainer's setting) or a number >= 0 (0: never clip); "
            f"got {value!r}",
        )


def _as_views(views: VoCoViews | Mapping[str, Any] | None) -> VoCoViews:
    """The views of ``views=``: as given, from their recorded fields, or the defaults."""
    if views is None:
        return VoCoViews()
    if isinstance(views, VoCoViews):
        return views
    if isinstance(views, Mapping):
        return VoCoViews(**{k: v for k, v in views.items() if not str(k).startswith("_")})
    raise ArgumentError("views", f" must be VoCoViews or a mapping of their fields; got {views!r}")


def _describe(out: VoCoLossOutput) -> Callable[[], str]:
    """The loss terms of ``out`` as text, for the warning about a non-finite loss."""
    return lambda: (
        f"intra={out.intra.item():.4g} inter={out.inter.item():.4g} reg={out.reg.item():.4g}"
    )
