"""``InjuryClassifier``: the LightningModule of CNN-LSTM injury classification (§3).

Thin: the network is :class:`~ctvoco.classify.net.InjuryNet`, the losses are in
:mod:`ctvoco.classify.losses`, the metric is :func:`ctvoco.metrics.rsna_score`. Validation
gathers series-level probabilities from every rank, drops the sampler's padding
duplicates, aggregates per patient and scores once, so the score under DDP equals the
single-process score.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch import Tensor

from ctvoco.classify.losses import (
    injury_loss,
    masked_slice_loss,
    mean_class_weights,
    probabilities,
    task_targets,
)
from ctvoco.classify.net import InjuryNet
from ctvoco.errors import UserError, check_optimizer_settings
from ctvoco.metrics.rsna import labels_from_classes, rsna_score, target_auc
from ctvoco.models.backbone import SliceEncoder, create_backbone
from ctvoco.models.checkpoints import load_backbone_weights
from ctvoco.schema import PREDICTION_COLUMNS
from ctvoco.training.guards import NonFiniteGuard, count_optimizer_steps
from ctvoco.training.schedules import (
    LR_SCHEDULES,
    CyclicCosine,
    WarmupCosine,
    stepping_batches,
)

log = logging.getLogger(__name__)

TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""Identity, horizontal, vertical and both flips of ``(..., H, W)`` slices."""

TTA_AXES: dict[str, int] = {"z": 1, "h": -2, "w": -1}
"""Axes of a ``(B, S, C, H, W)`` batch a test-time flip may reverse: ``z`` reverses the
slice order, ``h`` flips rows (vertical), ``w`` flips columns (horizontal)."""

DEFAULT_TTA_FLIPS: tuple[tuple[str, ...], ...] = ((), ("w",), ("h",), ("h", "w"))
"""The views of ``tta``: identity and the three in-plane flips (:data:`TTA_FLIPS`)."""

RESEARCH_TTA_FLIPS: tuple[tuple[str, ...], ...] = (
    (),
    ("z", "h", "w"),
    ("z", "h"),
    ("z", "w"),
    ("h", "w"),
)
"""The research code's test-time views: identity and four flips, three of them reversing
the slice order."""


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
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps before the cosine decay.
        min_lr_ratio: Final LR as a fraction of ``lr``.
        freeze_stages: Freeze the stem and the first N feature stages of the backbone
            (no gradients; kept in evaluation mode, so BatchNorm statistics stay fixed).
        channels_last: Channels-last memory format for the encoder and its slice batches.
        tta: Average probabilities over flips at evaluation.
        tta_flips: The views averaged when ``tta`` is on: a list of flips, each a list of the
            axes it reverses (``z``: slice order, ``h``: rows, ``w``: columns; ``[]`` is the
            image itself). Default :data:`DEFAULT_TTA_FLIPS`; the research code's is
            :data:`RESEARCH_TTA_FLIPS`.
        lr_schedule: ``cosine`` (warm-up, then one cosine to ``min_lr_ratio`` over the run)
            or ``cyclic_cosine`` (warm-up, then a cosine between the peak and
            ``min_lr_ratio`` that returns to the peak every ``2 * lr_half_period`` steps,
            the research code's; see :class:`~ctvoco.training.schedules.CyclicCosine`).
        lr_half_period: Steps from the peak to the minimum of ``cyclic_cosine``.
        compile: ``torch.compile`` the encoder (opt-in).
        max_nonfinite: Non-finite losses tolerated before training stops.
        data_config: How the inputs were made (preprocessing and views), kept for prediction.
        prevalence: Training class frequencies (13 values), the fallback prediction.
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
        lr: float = 1.25e-4,
        weight_decay: float = 1e-5,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        freeze_stages: int = 0,
        channels_last: bool = False,
        tta: bool = True,
        compile: bool = False,
        max_nonfinite: int = 10,
        data_config: dict[str, Any] | None = None,
        prevalence: Sequence[float] | None = None,
        tta_flips: Sequence[Sequence[str]] = DEFAULT_TTA_FLIPS,
        lr_schedule: str = "cosine",
        lr_half_period: int = 5000,
        image_loss_weight: float = 0.0,
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
        self.hparams.tta_flips = [list(axes) for axes in check_tta_flips(tta_flips)]
        self._tta_dims = tta_dims(self.hparams.tta_flips)
        if lr_schedule not in LR_SCHEDULES:
            raise UserError(
                f"model.module.lr_schedule must be one of {', '.join(LR_SCHEDULES)}; "
                f"got {lr_schedule!r}"
            )
        if not image_loss_weight >= 0:
            raise UserError(
                f"model.module.image_loss_weight must be 0 (off) or positive; got {image_loss_weight}"
            )
        self.targets = task_targets(task)
        kind, _, path = init.partition(":")
        if kind not in ("random", "imagenet", "voco") or (kind == "voco") != bool(path):
            raise UserError(f"model.init must be random, imagenet or voco:<path>; got {init!r}")
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
        self._outputs: list[dict[str, Tensor]] = []
        self.last_predictions: pd.DataFrame | None = None
        self.last_metrics: dict[str, float] = {}
        self._step_started = 0.0
        self._step_finite = True
        self._schedule = self._lr_factor()

    def setup(self, stage: str) -> None:
        """Remember how the data was made and the training prevalence, for prediction."""
        datamodule = (
            getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        )
        if datamodule is None or stage != "fit":
            return
        if hasattr(datamodule, "class_prevalence") and self.hparams.prevalence is None:
            self.hparams.prevalence = datamodule.class_prevalence()
        if hasattr(datamodule, "preprocess") and self.hparams.data_config is None:
            views = datamodule.val_views or datamodule.views
            self.hparams.data_config = {
                "preprocess": datamodule.preprocess.fingerprint(),
                "views": dataclasses.asdict(views) if dataclasses.is_dataclass(views) else {},
            }

    def _mean_weights(self) -> dict[str, float] | None:
        """Per-head mean competition weight of the training set (``metric`` reduction)."""
        prevalence = self.hparams.prevalence
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
        finite = self.trainer.strategy.reduce_boolean_decision(
            bool(torch.isfinite(loss).item()), all=True
        )
        self._step_finite = finite
        if not self.guard.check(finite, self.global_step):
            self.log("train/nonfinite_count", float(self.guard.count), batch_size=size)
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

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        elapsed = time.perf_counter() - self._step_started
        size = batch["labels"].shape[0]
        if elapsed > 0:
            self.log("train/volumes_per_s", size / elapsed, batch_size=size)
        self.log("train/scaler_skipped_steps", float(self.guard.scaler_skips), batch_size=size)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        """Step the optimiser, counting steps the fp16 gradient scaler skipped."""
        with count_optimizer_steps(optimizer) as stepped:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self._step_finite:
            self.guard.optimizer_step(bool(stepped.count), self.global_step)

    def on_train_start(self) -> None:
        # The run length is read here, after a checkpoint restore (see WarmupCosine).
        self._schedule.total_steps = stepping_batches(self.trainer)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, foreach=True
        )
        self._schedule = self._lr_factor()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _lr_factor(self) -> WarmupCosine | CyclicCosine:
        """The LR factor of ``lr_schedule``, a pure function of the optimiser step."""
        h = self.hparams
        if h.get("lr_schedule", "cosine") == "cyclic_cosine":
            return CyclicCosine(h.lr_half_period, h.min_lr_ratio, h.warmup_steps)
        return WarmupCosine(h.warmup_steps, h.min_lr_ratio)

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
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        return {
            "probs": self.predict_proba(batch["image"]).float().cpu(),
            "key": list(batch["key"]),
            "patient_id": list(batch["patient_id"]),
            "series_id": list(batch["series_id"]),
        }

    # -- checkpoint state -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nonfinite_guard"] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.guard.load_state_dict(checkpoint.get("nonfinite_guard", {}))


def check_tta_flips(flips: object) -> tuple[tuple[str, ...], ...]:
    """The test-time views of ``tta_flips``, checked: a non-empty list of axis lists.

    Raises:
        UserError: Naming ``model.module.tta_flips``, the value and what it must be.
    """
    allowed = ", ".join(TTA_AXES)
    problem = "model.module.tta_flips must be a non-empty list of flips, each a list of "
    problem += f"distinct axes from {allowed} ([] is the image itself); got {flips!r}"
    if isinstance(flips, (str, bytes)) or not isinstance(flips, Sequence) or not flips:
        raise UserError(problem)
    checked = []
    for axes in flips:
        if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence):
            raise UserError(problem)
        if any(a not in TTA_AXES for a in axes) or len(set(axes)) != len(axes):
            raise UserError(problem)
        checked.append(tuple(axes))
    return tuple(checked)


def tta_dims(flips: Sequence[Sequence[str]]) -> tuple[tuple[int, ...], ...]:
    """Tensor dims of a ``(B, S, C, H, W)`` batch that each of ``flips`` reverses."""
    return tuple(tuple(TTA_AXES[a] for a in axes) for axes in flips)


def score_predictions(labels: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    """The six losses, ``score`` and ``auc_<target>`` for per-series predictions."""
    metrics = rsna_score(labels, predictions, aggregate="max")
    metrics.update(
        {f"auc_{k}": v for k, v in target_auc(labels, predictions, aggregate="max").items()}
    )
    return metrics


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


def _stage_prefix(backbone: torch.nn.Module, stages: int) -> list[tuple[str, torch.nn.Module]]:
    """``(name, module)`` of everything up to the end of feature stage ``stages``.

    timm registers modules in forward order, so this is the stem and the first ``stages``
    stages (timm ``feature_info``), plus the containers that hold them.
    """
    info = getattr(backbone, "feature_info", None)
    modules = [entry["module"] for entry in info] if info else []
    if not modules:
        raise UserError(f"{type(backbone).__name__} has no feature_info; cannot freeze stages")
    boundary = modules[min(stages, len(modules)) - 1]
    named = list(backbone.named_modules())
    inside = [i for i, (n, _) in enumerate(named) if n == boundary or n.startswith(boundary + ".")]
    return named[: (inside[-1] + 1) if inside else 0]


def freeze_backbone_stages(backbone: torch.nn.Module, stages: int) -> int:
    """Freeze the stem and the first ``stages`` feature stages (timm ``feature_info``).

    Returns:
        The number of frozen parameter tensors.
    """
    frozen = 0
    for name, module in _stage_prefix(backbone, stages):
        for param in module.parameters(recurse=False):
            param.requires_grad_(False)
            frozen += 1
        log.debug("frozen %s", name)
    return frozen


def frozen_stage_modules(backbone: torch.nn.Module) -> list[torch.nn.Module]:
    """The largest submodules of ``backbone`` whose parameters are all frozen.

    Only modules that hold parameters (directly or below) count, and a module is listed
    only if no ancestor is; the backbone itself when everything is frozen.
    """
    found: list[torch.nn.Module] = []

    def visit(module: torch.nn.Module) -> None:
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(backbone)
    return found
