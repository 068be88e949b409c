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
from ctvoco.training.schedules import WarmupCosine, stepping_batches

log = logging.getLogger(__name__)

TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""Identity, horizontal, vertical and both flips of ``(..., H, W)`` slices."""


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
        compile: ``torch.compile`` the encoder (opt-in).
        max_nonfinite: Non-finite losses tolerated before training stops.
        data_config: How the inputs were made (preprocessing and views), kept for prediction.
        prevalence: Training class frequencies (13 values), the fallback prediction.
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
            SliceEncoder(encoder_backbone, "avg"), sequence, hidden, layers, slice_pooling, dropout
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
        self._schedule = WarmupCosine(warmup_steps, min_lr_ratio)

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
        """``(B, 13)`` probabilities, averaged over flips when ``tta``.

        Args:
            image: ``(B, S, C, H, W)`` batch.
            tta: Average over :data:`TTA_FLIPS` (default: the model's ``tta`` setting).
            logits: Logits of ``image`` already computed (saves one forward pass).
        """
        use_tta = self.hparams.tta if tta is None else tta
        total = probabilities(logits if logits is not None else self(image))
        if not use_tta:
            return total
        for dims in TTA_FLIPS[1:]:
            total = total + probabilities(self(image.flip(dims)))
        return total / len(TTA_FLIPS)

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        loss, parts = injury_loss(
            self(batch["image"]),
            batch["labels"],
            self.targets,
            self.hparams.loss_reduction,
            self._mean_weights(),
        )
        size = batch["labels"].shape[0]
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
        self._schedule = WarmupCosine(self.hparams.warmup_steps, self.hparams.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

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
