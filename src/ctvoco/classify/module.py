"""``InjuryClassifier``: the LightningModule of CNN-LSTM injury classification (§3).

Thin: the network is :class:`~ctvoco.classify.net.InjuryNet`, the losses are in
:mod:`ctvoco.classify.losses`, the metric is :func:`ctvoco.metrics.rsna_score`. Validation
gathers series-level probabilities from every rank, drops the sampler's padding
duplicates, aggregates per patient and scores once, so the score under DDP equals the
single-process score.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch import Tensor

from ctvoco.classify.losses import (
    REDUCTIONS,
    injury_loss,
    masked_slice_loss,
    mean_class_weights,
    probabilities,
    task_targets,
)
from ctvoco.classify.net import SLICE_POOLINGS, InjuryNet
from ctvoco.classify.spec import CHECKPOINT_KEY as SPEC_KEY
from ctvoco.classify.spec import InferenceSpec, InferenceSpecFromData
from ctvoco.classify.tta import DEFAULT_TTA_FLIPS, check_tta_flips, tta_dims
from ctvoco.errors import ArgumentError, DataError, UserError, look_up_option
from ctvoco.labels import PREDICTION_COLUMNS, labels_from_classes
from ctvoco.metrics.rsna import score_predictions
from ctvoco.models.backbone import SliceEncoder, create_backbone
from ctvoco.models.checkpoints import load_backbone_weights
from ctvoco.models.freezing import freeze_backbone_stages, frozen_stage_modules
from ctvoco.training.guards import NonFiniteGuard, NonFiniteMonitor
from ctvoco.training.optim import PartialSpec, StepOptimization
from ctvoco.training.throughput import ThroughputMonitor

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER: Mapping[str, Any] = {
    "_target_": "torch.optim.AdamW",
    "lr": 1.25e-4,
    "weight_decay": 1e-5,
    "amsgrad": False,
    "foreach": True,
}
"""The optimiser of ``optimizer=None`` (``model=classifier``'s ``model.module.optimizer``)."""

DEFAULT_SCHEDULER: Mapping[str, Any] = {
    "_target_": "ctvoco.training.schedules.WarmupCosine",
    "warmup_steps": 0,
    "min_lr_ratio": 0.0,
}
"""The LR schedule of ``scheduler=None``: warm-up, then one cosine to ``min_lr_ratio`` over
the run (``model=classifier``'s ``model.module.scheduler``)."""


class InjuryClassifier(pl.LightningModule):
    """CNN-LSTM classifier of the five RSNA injury targets.

    Args:
        backbone: timm model name.
        in_chans: Channels per slice (windows in the cache).
        init: ``random``, ``imagenet`` (local weights) or ``voco:<path>`` (a VoCo export,
            a ctvoco checkpoint or a research-code state dict; loaded strictly).
        weights_dir: Folder with local ImageNet weights.
        sequence: ``lstm`` or ``gru``.
        hidden: Recurrent hidden size per direction.
        layers: Recurrent layers.
        slice_pooling: ``max``, ``mean`` or ``attention``.
        dropout: Dropout before the heads.
        task: ``all``, ``rest_organs`` or one target name.
        loss_reduction: ``metric`` (consistent with the competition metric), ``mean``
            (the research code's) or ``weighted_mean`` (per-batch ratio, biased); see
            :mod:`ctvoco.classify.losses`.
        optimizer: ``optimizer(params)`` builds the optimiser (a partial, e.g. Hydra's
            ``_partial_: true``); ``None``: :data:`DEFAULT_OPTIMIZER`.
        scheduler: ``scheduler()`` builds the per-step LR factor; ``None``:
            :data:`DEFAULT_SCHEDULER`. The research code's is
            :class:`~ctvoco.training.schedules.CyclicCosine` (down to ``min_lr_ratio`` in
            ``half_period`` steps and back up, again and again).
        freeze_stages: Freeze the stem and the first N feature stages of the backbone
            (no gradients; kept in evaluation mode, so BatchNorm statistics stay fixed).
        channels_last: Channels-last memory format for the encoder and its slice batches.
        tta: Average probabilities over flips at evaluation.
        tta_flips: The views averaged when ``tta`` is on: a list of flips, each a list of the
            axes it reverses (``z``: slice order, ``h``: rows, ``w``: columns; ``[]`` is the
            image itself). Default :data:`~ctvoco.classify.tta.DEFAULT_TTA_FLIPS`; the
            research code's is :data:`~ctvoco.classify.tta.RESEARCH_TTA_FLIPS`.
        compile: ``torch.compile`` the encoder (opt-in).
        max_nonfinite: Non-finite losses tolerated before training stops.
        inference: How the inputs are made and the training prevalence
            (:class:`~ctvoco.classify.spec.InferenceSpec`), stored in the checkpoints for
            prediction; its prevalence also normalises the ``metric`` loss. Not a
            hyper-parameter: the caller gives it (or sets :attr:`inference` before training).
        image_loss_weight: Weight of the per-slice loss on image-level labels (masked BCE
            of a linear head on every slice's sequence features; ``train/image_loss``).
            0 (default) adds neither the head nor the loss.
    """

    def __init__(
        self,
        backbone: str = "efficientnetv2_rw_s",
        in_chans: int = 1,
        init: str = "random",
        weights_dir: str | None = None,
        sequence: str = "lstm",
        hidden: int = 128,
        layers: int = 1,
        slice_pooling: str = "max",
        dropout: float = 0.0,
        task: str = "all",
        loss_reduction: str = "metric",
        optimizer: PartialSpec | None = None,
        scheduler: PartialSpec | None = None,
        freeze_stages: int = 0,
        channels_last: bool = False,
        tta: bool = True,
        compile: bool = False,
        max_nonfinite: int = 10,
        inference: InferenceSpec | None = None,
        tta_flips: Sequence[Sequence[str]] = DEFAULT_TTA_FLIPS,
        image_loss_weight: float = 0.0,
    ) -> None:
        self.optimization = StepOptimization(
            optimizer,
            scheduler,
            default_optimizer=DEFAULT_OPTIMIZER,
            default_scheduler=DEFAULT_SCHEDULER,
        )
        super().__init__()
        self.save_hyperparameters(ignore=["inference", "optimizer", "scheduler"])
        self.hparams.update(self.optimization.hparams())
        self.inference = inference
        self.hparams.tta_flips = [list(axes) for axes in check_tta_flips(tta_flips)]
        self._tta_dims = tta_dims(self.hparams.tta_flips)
        if not image_loss_weight >= 0:
            raise ArgumentError(
                "image_loss_weight", f" must be 0 (off) or positive; got {image_loss_weight}"
            )
        self.targets = task_targets(task)
        look_up_option("loss_reduction", loss_reduction, REDUCTIONS)
        look_up_option("slice_pooling", slice_pooling, SLICE_POOLINGS)
        kind, _, path = init.partition(":")
        if kind not in ("random", "imagenet", "voco") or (kind == "voco") != bool(path):
            raise ArgumentError("init", f" must be random, imagenet or voco:<path>; got {init!r}")
        encoder_backbone = create_backbone(
            backbone,
            in_chans=in_chans,
            init="imagenet" if kind == "imagenet" else "random",
            weights_dir=weights_dir,
        )
        if kind == "voco":
            report = load_backbone_weights(encoder_backbone, path)
            log.info("backbone initialised from %s", report.summary())
        self.net = InjuryNet(
            SliceEncoder(encoder_backbone, "avg"),
            sequence,
            hidden,
            layers,
            slice_pooling,
            dropout,
            slice_head=image_loss_weight > 0,
        )
        self._frozen_modules: tuple[str, ...] = ()
        if freeze_stages:
            freeze_backbone_stages(encoder_backbone, freeze_stages)
            names = {id(m): n for n, m in self.named_modules()}
            self._frozen_modules = tuple(
                names[id(m)] for m in frozen_stage_modules(encoder_backbone)
            )
            self.train(self.training)
        if channels_last:
            self.net.encoder.to(memory_format=torch.channels_last)
        self._compiled: dict[str, Any] = (
            {"encoder": torch.compile(self.net.encoder)} if compile else {}
        )
        self.guard = NonFiniteGuard(max_nonfinite)
        self.nonfinite = NonFiniteMonitor(self.guard, "labels", log_count_every_step=False)
        self._outputs: list[dict[str, Tensor]] = []
        self.last_predictions: pd.DataFrame | None = None
        self.last_metrics: dict[str, float] = {}

    def _mean_weights(self) -> dict[str, float] | None:
        """Per-head mean competition weight of the training set (``metric`` reduction)."""
        prevalence = None if self.inference is None else self.inference.prevalence
        return None if prevalence is None else mean_class_weights(prevalence)

    # -- forward ----------------------------------------------------------------------------
    def _slices(self, image: Tensor) -> Tensor:
        """``(B, S, C, H, W)`` uint8 -> the ``(B*S, C, H, W)`` float slice batch in [0, 1].

        Channels-last when ``channels_last`` is on (the encoder's weights are too).
        """
        x = image.flatten(0, 1)
        # never in place on a float input: it is the caller's tensor
        x = x / 255.0 if x.dtype == torch.float32 else x.to(torch.float32).div_(255.0)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """``(B, S, C, H, W)`` uint8 (or float in [0, 1] scaled by 255) -> logits per target."""
        b, s = image.shape[:2]
        encoder = self._compiled.get("encoder", self.net.encoder)
        feats = encoder(self._slices(image)).float().view(b, s, -1)
        return self.net.from_features(feats)

    def train(self, mode: bool = True) -> InjuryClassifier:
        """Set the training mode; frozen backbone stages always stay in evaluation mode.

        Frozen stages then keep their BatchNorm running statistics (and skip dropout and
        stochastic depth), so they compute exactly what the loaded weights did.
        """
        super().train(mode)
        for name in self._frozen_modules:
            self.get_submodule(name).train(False)
        return self

    def predict_proba(
        self, image: Tensor, tta: bool | None = None, logits: dict[str, Tensor] | None = None
    ) -> Tensor:
        """``(B, 13)`` probabilities, averaged over the ``tta_flips`` views when ``tta``.

        Args:
            image: ``(B, S, C, H, W)`` batch.
            tta: Average over the model's ``tta_flips`` (default: its ``tta`` setting).
            logits: Logits of ``image`` already computed (saves one forward pass).
        """
        use_tta = self.hparams.tta if tta is None else tta
        if not use_tta:
            return probabilities(logits if logits is not None else self(image))
        total: Tensor | None = None
        for dims in self._tta_dims:
            if dims:
                probs = probabilities(self(image.flip(dims)))
            else:
                probs = probabilities(logits if logits is not None else self(image))
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(self._tta_dims)

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        logits = self(batch["image"])
        loss, parts = injury_loss(
            logits,
            batch["labels"],
            self.targets,
            self.hparams.loss_reduction,
            self._mean_weights(),
        )
        size = batch["labels"].shape[0]
        if self.hparams.get("image_loss_weight", 0.0) > 0:
            image_loss = self._image_loss(logits, batch)
            loss = loss + self.hparams.image_loss_weight * image_loss
            self.log("train/image_loss", image_loss, batch_size=size)
        if not self.nonfinite.loss_is_finite(self, loss):
            return None
        self.log("train/loss", loss, batch_size=size, prog_bar=True)
        self.log_dict({f"train/loss_{t}": v for t, v in parts.items()}, batch_size=size)
        return loss

    def _image_loss(self, logits: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        """Masked per-slice BCE of the slice head against the batch's image-level targets."""
        if "slice_targets" not in batch:
            raise UserError(
                "model.module.image_loss_weight > 0 needs per-slice targets: train on "
                "data=rsna with image_level_labels.csv under data.root "
                "(data.image_level_labels=auto) or data.image_level_labels=<path to the file>"
            )
        return masked_slice_loss(logits["slices"], batch["slice_targets"], batch["slice_mask"])

    def configure_callbacks(self) -> list[pl.Callback]:
        """Throughput (``train/volumes_per_s``), the non-finite loss policy and, without an
        inference spec, :class:`~ctvoco.classify.spec.InferenceSpecFromData`."""
        callbacks: list[pl.Callback] = [ThroughputMonitor("labels"), self.nonfinite]
        if self.inference is None:
            callbacks.append(InferenceSpecFromData())
        return callbacks

    def on_train_start(self) -> None:
        # The run length is read here, after a checkpoint restore (see WarmupCosine).
        self.optimization.start(self.trainer)

    def configure_optimizers(self) -> dict[str, Any]:
        return self.optimization.configure(self)

    # -- evaluation -------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["image"])
        probs = self.predict_proba(batch["image"], logits=logits)
        loss, _ = injury_loss(
            logits, batch["labels"], self.targets, self.hparams.loss_reduction, self._mean_weights()
        )
        self.log("val/loss", loss, batch_size=batch["labels"].shape[0], sync_dist=True)
        self._outputs.append(
            {
                "probs": probs.detach().float(),
                "labels": batch["labels"].detach(),
                "patient_id": _as_int_tensor(batch["patient_id"], probs.device),
                "series_id": _as_int_tensor(batch["series_id"], probs.device),
            }
        )

    def on_validation_epoch_end(self) -> None:
        if not self._outputs:
            return
        merged = {k: torch.cat([o[k] for o in self._outputs]) for k in self._outputs[0]}
        self._outputs.clear()
        if self.trainer.world_size > 1:
            merged = {k: self.all_gather(v).flatten(0, 1) for k, v in merged.items()}
        predictions, labels = _frames(merged)
        metrics = score_predictions(labels, predictions)
        self.last_predictions, self.last_metrics = predictions, metrics
        logged = {**metrics, "task_score": task_score(metrics, self.hparams.task)}
        self.log_dict(
            {f"val/{k}": v for k, v in logged.items() if np.isfinite(v)}, rank_zero_only=True
        )

    def predict_step(
        self,
        batch: dict[str, Any],
        batch_idx: int = 0,
        dataloader_idx: int = 0,
        *,
        tta: bool | None = None,
    ) -> dict[str, Any]:
        """A batch of series -> their ``(B, 13)`` float32 probabilities on the CPU.

        The one place prediction turns a batch into probabilities: test-time flips as
        ``tta`` says (default: the model's ``tta`` setting), see :meth:`predict_proba`.

        Returns:
            ``probs`` and the batch's ``key``, ``patient_id`` and ``series_id`` lists.
        """
        image = batch["image"].to(self.device)
        return {
            "probs": self.predict_proba(image, tta=tta).float().cpu(),
            "key": list(batch["key"]),
            "patient_id": list(batch["patient_id"]),
            "series_id": list(batch["series_id"]),
        }

    # -- checkpoint state -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nonfinite_guard"] = self.guard.state_dict()
        if self.inference is not None:
            checkpoint[SPEC_KEY] = self.inference.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.guard.load_state_dict(checkpoint.get("nonfinite_guard", {}))
        if self.inference is None:  # a resumed run keeps the spec of its own data
            with contextlib.suppress(DataError):
                self.inference = InferenceSpec.from_checkpoint(checkpoint, "checkpoint")


def task_score(losses: Mapping[str, float], task: str) -> float:
    """The model-selection score of a task: the mean loss over what the task trains.

    The trained targets' losses, plus ``any_injury`` for ``all`` only, so that ``all``
    selects on the competition score itself (``task_score == score``) and a task that
    leaves heads untrained is not judged on their random outputs.

    Args:
        losses: At least the losses of :func:`ctvoco.metrics.rsna_score`.
        task: ``all``, ``rest_organs`` or one target.
    """
    names = (*task_targets(task), "any_injury") if task == "all" else task_targets(task)
    return float(np.mean([losses[name] for name in names]))


def _as_int_tensor(values: Sequence[Any], device: torch.device) -> Tensor:
    try:
        return torch.as_tensor([int(v) for v in values], dtype=torch.int64, device=device)
    except ValueError as exc:
        raise UserError(
            f"classification needs integer patient and series ids; got {list(values)[:3]}"
        ) from exc


def _frames(merged: dict[str, Tensor]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Series-level prediction frame and patient-level label frame, padding duplicates dropped."""
    predictions = pd.DataFrame(merged["probs"].cpu().numpy(), columns=list(PREDICTION_COLUMNS))
    predictions.insert(0, "series_id", merged["series_id"].cpu().numpy())
    predictions.insert(0, "patient_id", merged["patient_id"].cpu().numpy())
    keep = ~predictions.duplicated(["patient_id", "series_id"]).to_numpy()
    predictions = predictions[keep].reset_index(drop=True)
    classes = merged["labels"].cpu().numpy()[keep]
    per_patient = pd.DataFrame(classes).assign(patient_id=predictions["patient_id"].to_numpy())
    per_patient = per_patient.drop_duplicates("patient_id").sort_values("patient_id")
    labels = labels_from_classes(
        per_patient["patient_id"].tolist(), per_patient.drop(columns="patient_id").to_numpy()
    )
    return predictions, labels
