"""``VoCoPretrainer``: the LightningModule of 2D VoCo pretraining (ALGORITHMS.md §2).

The module is thin: networks are a :class:`~ctvoco.models.backbone.SliceEncoder` and a
:class:`~ctvoco.voco.heads.ProjectionHead` per branch, the math is in
:mod:`ctvoco.voco.losses`, :mod:`ctvoco.voco.ema` and :mod:`ctvoco.voco.position`.

Teacher handling:

- ``teacher_head="ema"`` (default): the whole teacher (backbone and head) follows the
  student by EMA after each optimiser step, momentum ``m`` optionally on a cosine schedule
  towards 1; nothing of the teacher is trained by gradient.
- ``teacher_head="seed"`` (research code): only the teacher backbone is EMA'd; the teacher
  head is trained by gradient through the intra-volume loss.

The teacher's backbone always runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import GradClipAlgorithmType
from torch import Tensor

from ctvoco.errors import UserError, check_optimizer_settings
from ctvoco.models.backbone import SliceEncoder, create_backbone
from ctvoco.training.distributed import gather_with_grad
from ctvoco.training.guards import NonFiniteGuard, count_optimizer_steps
from ctvoco.training.schedules import WarmupCosine, check_schedule_steps, stepping_batches
from ctvoco.voco.ema import cosine_momentum, update_momentum
from ctvoco.voco.heads import DROPOUT_PLACES, ProjectionHead, SliceDropout
from ctvoco.voco.losses import VoCoLoss, VoCoLossOutput, inter_volume_loss, similarity
from ctvoco.voco.position import position_errors

log = logging.getLogger(__name__)

TEACHER_HEADS = ("ema", "seed")
MOMENTUM_SCHEDULES = ("constant", "cosine")
INTER_PAIRINGS = ("local", "global")


class VoCoPretrainer(pl.LightningModule):
    """Student/teacher VoCo pretraining of any timm backbone on CT slices.

    Args:
        backbone: timm model name (``in_chans`` channels).
        in_chans: Input channels of the slices.
        init: Backbone init, ``random`` or ``imagenet`` (local weights only).
        weights_dir: Folder with local ImageNet weights.
        pooling: ``avg`` or ``flatten`` (research code; ties the head to ``crop_size``).
        crop_size: ``r``, side of the crops (needed for ``flatten``).
        grid: ``n``, base grid ``n x n``.
        num_random: ``K`` random crops per volume.
        head_hidden: Projection head width.
        head_out: Embedding size.
        head_norm: ``batch`` (correct) or ``seed`` (research code's per-slot BN).
        teacher_head: ``ema`` or ``seed`` (see the module docstring).
        momentum: EMA momentum ``m`` (start value with the cosine schedule).
        momentum_schedule: ``constant`` or ``cosine`` (towards 1 at the last step).
        dropout: Dropout on student features before the head.
        w_intra: Weight of the intra-volume (position) loss.
        w_inter: Weight of the inter-volume (consistency) loss.
        w_reg: Weight of the base-crop regularisation.
        inter_pairing: ``local`` (partner in the same process batch) or ``global`` (partners
            from the batch gathered over all DDP ranks).
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        amsgrad: AdamW amsgrad.
        warmup_steps: Linear warm-up steps before the cosine decay (per optimiser step).
        min_lr_ratio: Final LR as a fraction of ``lr``.
        max_nonfinite: Non-finite losses tolerated before training stops.
        channels_last: Run the encoders in channels-last memory format.
        compile: ``torch.compile`` the encoders (opt-in).
        dropout_at: ``crop`` (dropout on the slice mean) or ``slice`` (on every slice's
            features before the mean, research code); see :class:`~ctvoco.voco.heads.SliceDropout`.
        intra_symmetric: Intra-volume term from both sides (the research code's V1 head); see
            :func:`~ctvoco.voco.losses.symmetric_intra_volume_loss`.
        schedule_steps: Step at which the LR cosine ends; ``None``: the run length.
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
        crop_size: int = 64,
        grid: int = 3,
        num_random: int = 2,
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
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        amsgrad: bool = True,
        warmup_steps: int = 5000,
        min_lr_ratio: float = 0.0,
        max_nonfinite: int = 10,
        channels_last: bool = False,
        compile: bool = False,
        dropout_at: str = "crop",
        intra_symmetric: bool = False,
        schedule_steps: int | None = None,
        gradient_clip_val: float | None = None,
    ) -> None:
        check_optimizer_settings(
            "model.module",
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            min_lr_ratio=min_lr_ratio,
        )
        super().__init__()
        self.save_hyperparameters()
        _check_choice("teacher_head", teacher_head, TEACHER_HEADS)
        _check_choice("momentum_schedule", momentum_schedule, MOMENTUM_SCHEDULES)
        _check_choice("inter_pairing", inter_pairing, INTER_PAIRINGS)
        _check_choice("dropout_at", dropout_at, DROPOUT_PLACES)
        check_schedule_steps("model.module", schedule_steps, warmup_steps)
        _check_clip(gradient_clip_val)
        if not 0.0 <= momentum <= 1.0:
            raise UserError(f"model.momentum must be in [0, 1]; got {momentum}")
        if min(w_intra, w_inter, w_reg) < 0 or not (w_intra or w_inter or w_reg):
            raise UserError(
                f"model loss weights must be >= 0 and not all 0; got w_intra={w_intra}, "
                f"w_inter={w_inter}, w_reg={w_reg}"
            )
        slots = num_random + grid * grid
        self.student_encoder = SliceEncoder(
            create_backbone(backbone, in_chans=in_chans, init=init, weights_dir=weights_dir),  # type: ignore[arg-type]
            pooling=pooling,
            input_size=(crop_size, crop_size),
        )
        features = self.student_encoder.out_features
        self.student_head = ProjectionHead(
            features, head_hidden, head_out, norm=head_norm, num_slots=slots
        )  # type: ignore[arg-type]
        self.teacher_encoder = copy.deepcopy(self.student_encoder)
        self.teacher_head = copy.deepcopy(self.student_head)
        self.teacher_encoder.requires_grad_(False)
        self.teacher_head.requires_grad_(teacher_head == "seed")
        self.dropout = SliceDropout(dropout, dropout_at)  # type: ignore[arg-type]
        self.criterion = VoCoLoss(
            w_intra,
            w_inter,
            w_reg,
            detach_teacher=teacher_head == "ema",
            intra_symmetric=intra_symmetric,
        )
        self.guard = NonFiniteGuard(max_nonfinite)
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
        self._step_started = 0.0
        self._step_finite = True
        self._run_steps: int | None = None
        self._schedule = WarmupCosine(warmup_steps, min_lr_ratio, schedule_steps=schedule_steps)

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
        if self.hparams.teacher_head == "seed":
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
        out = self.criterion(
            emb["student_random"],
            emb["student_base"],
            emb["teacher_random"],
            emb["teacher_base"],
            targets,
        )
        if (
            self.hparams.inter_pairing != "global"
            or self.trainer.world_size <= 1
            or not self.hparams.w_inter
        ):
            return out
        bases, partner = self._gather_partners(emb)
        inter = inter_volume_loss(
            emb["student_random"],
            bases["student_base"],
            emb["teacher_random"],
            bases["teacher_base"],
            partner_index=partner,
        )
        h = self.hparams
        total = h.w_intra * out.intra + h.w_inter * inter + h.w_reg * out.reg
        return VoCoLossOutput(total, out.intra, inter, out.reg)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        emb = self.embed(batch["random"], batch["base"])
        out = self.losses(emb, batch["targets"].float())
        finite = bool(torch.isfinite(out.total).item())
        finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        self._step_finite = finite
        size = batch["targets"].shape[0]
        detail = (
            f"intra={out.intra.item():.4g} inter={out.inter.item():.4g} reg={out.reg.item():.4g}"
        )
        if not self.guard.check(finite, self.global_step, detail):
            return None
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

    def _gather_partners(self, emb: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """Base embeddings of the global batch (student ones with gradient) and partners.

        Volume ``b`` of rank ``r`` pairs with global volume ``(r*B + b + 1) mod (W*B)``, so
        at the batch boundary the partner is the next rank's first volume.
        """
        local = emb["student_base"].shape[0]
        rank, world = self.trainer.global_rank, self.trainer.world_size
        bases = {
            "student_base": gather_with_grad(emb["student_base"]),
            "teacher_base": gather_with_grad(emb["teacher_base"].detach()),
        }
        index = (rank * local + torch.arange(local, device=emb["student_base"].device) + 1) % (
            world * local
        )
        return bases, index

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        elapsed = time.perf_counter() - self._step_started
        size = batch["targets"].shape[0]
        if elapsed > 0:
            self.log("train/volumes_per_s", size / elapsed, batch_size=size)
        self.log("train/ema_momentum", self.current_momentum(), batch_size=size)
        # Logged here, after the optimiser step, so that steps the gradient scaler skipped
        # (counted in optimizer_step) show up in the same step's value.
        self.log("train/nonfinite_count", float(self.guard.count), batch_size=size)
        self.log("train/scaler_skipped_steps", float(self.guard.scaler_skips), batch_size=size)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Any = None,
    ) -> None:
        """Step the optimiser, then move the teacher towards the student (EMA).

        Two kinds of step change no weights and leave the teacher alone too:

        - the loss was not finite (``training_step`` returned ``None``, no gradients);
        - the loss was finite but the gradients were not, and the fp16 gradient scaler
          (``16-mixed``) skipped ``optimizer.step()`` (counted apart, see
          :mod:`ctvoco.training.guards`).

        Lightning still counts both in ``global_step``.
        """
        with count_optimizer_steps(optimizer) as stepped:
            # runs the closure, i.e. training_step and backward
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if not self._step_finite:
            return
        self.guard.optimizer_step(bool(stepped.count), self.global_step)
        if not stepped.count:
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
        self._run_steps = stepping_batches(self.trainer)
        warmup = int(self.hparams.warmup_steps)
        if warmup >= self._run_steps:
            log.warning(
                "warmup_steps=%d >= total steps %d: the run never leaves warm-up",
                warmup,
                self._run_steps,
            )
        self._schedule.total_steps = self._run_steps

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            amsgrad=self.hparams.amsgrad,
            foreach=True,
        )
        self._schedule = WarmupCosine(
            self.hparams.warmup_steps,
            self.hparams.min_lr_ratio,
            schedule_steps=self.hparams.get("schedule_steps"),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

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
        raise UserError(
            f"model.module.gradient_clip_val must be null (the trainer's setting) or a "
            f"number >= 0 (0: never clip); got {value!r}"
        )


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"model.{key} must be one of {', '.join(choices)}; got {value!r}")
