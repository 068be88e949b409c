"""``OrganSegmenter``: the Lightning module that trains the organ U-Net on masked slices.

The loss is MONAI's Dice + cross-entropy over the background and the organs. Validation
counts overlaps per series over all of its slices and reports each organ's Dice, averaged
over series (:mod:`ctvoco.segment.dice`), as ``val/dice_<organ>`` and ``val/dice_mean``
(higher is better); with several processes their counts are summed first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from monai.losses import DiceCELoss
from pytorch_lightning import LightningModule
from torch import Tensor

from ctvoco.io.masks import MASK_LABELS
from ctvoco.segment.dice import organ_dice, overlap_counts
from ctvoco.segment.net import DEFAULT_DECODER_CHANNELS, organ_unet
from ctvoco.training.optim import PartialSpec, StepOptimization

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER: Mapping[str, Any] = {
    "_target_": "torch.optim.AdamW",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "_partial_": True,
}
DEFAULT_SCHEDULER: Mapping[str, Any] = {
    "_target_": "ctvoco.training.schedules.WarmupCosine",
    "warmup_steps": 0,
    "min_lr_ratio": 0.0,
    "_partial_": True,
}


class OrganSegmenter(LightningModule):
    """Organ segmentation of 2.5D slices: a U-Net on a timm encoder.

    Args:
        backbone: The timm encoder (:func:`~ctvoco.segment.net.organ_unet`).
        context: Neighbour slices on each side of the centre slice (inputs have
            ``windows * (2 * context + 1)`` channels).
        windows: Channels of the cache (its windows).
        init: ``random``, ``imagenet`` or ``voco:<path>`` (a VoCo export: pretrain with
            ``model.module.in_chans`` equal to this module's input channels).
        weights_dir: Local ImageNet weights (``init=imagenet``).
        decoder_channels: The U-Net decoder's five widths, deepest first.
        organs: Organ name -> label of the masks (default RSNA's).
        optimizer: ``optimizer(params)``; ``None``: AdamW, lr 1e-3.
        scheduler: Per-step LR factor; ``None``: cosine decay without warm-up.

    Shapes:
        ``forward``: ``(N, in_chans, H, W)`` -> ``(N, 1 + organs, H, W)`` logits.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_b0",
        context: int = 1,
        windows: int = 1,
        init: str = "random",
        weights_dir: str | None = None,
        decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS,
        organs: Mapping[str, int] | None = None,
        optimizer: PartialSpec | None = None,
        scheduler: PartialSpec | None = None,
    ) -> None:
        super().__init__()
        self.optimization = StepOptimization(
            optimizer,
            scheduler,
            default_optimizer=DEFAULT_OPTIMIZER,
            default_scheduler=DEFAULT_SCHEDULER,
        )
        self.organs = dict(organs or MASK_LABELS)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams.update(self.optimization.hparams())
        self.hparams.organs = self.organs
        self.in_chans = int(windows) * (2 * int(context) + 1)
        self.num_classes = 1 + max(self.organs.values())
        self.net = organ_unet(
            backbone,
            self.num_classes,
            in_chans=self.in_chans,
            init=init,
            weights_dir=weights_dir,
            decoder_channels=tuple(decoder_channels),
        )
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self._counts: dict[str, Tensor] = {}
        self.last_counts: dict[str, Tensor] = {}
        """The last validation's overlap counts per series (all processes)."""
        self.last_dice: dict[str, float] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["mask"].unsqueeze(1))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["mask"]))
        return loss

    def on_train_start(self) -> None:
        self.optimization.start(self.trainer)

    def configure_optimizers(self) -> dict[str, Any]:
        return self.optimization.configure(self)

    def on_validation_epoch_start(self) -> None:
        self._counts = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log(
            "val/loss",
            self.loss(logits, batch["mask"].unsqueeze(1)),
            batch_size=len(batch["mask"]),
        )
        pred = logits.argmax(1)
        for i, key in enumerate(batch["key"]):
            counts = overlap_counts(pred[i], batch["mask"][i], self.num_classes)
            self._counts[key] = self._counts.get(key, 0) + counts

    def on_validation_epoch_end(self) -> None:
        self.last_counts = self.series_counts()
        self.last_dice = organ_dice(self.last_counts, self.organs)
        for name, value in self.last_dice.items():
            if value == value:  # nan: the organ is in no validation series
                self.log(f"val/dice_{name}", value, rank_zero_only=True)

    def series_counts(self) -> dict[str, Tensor]:
        """The last validation's overlap counts per series, of every process, summed (the
        slices of one series may be validated by several processes)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self._counts
        parts: list[dict[str, Tensor] | None] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, {k: v.cpu() for k, v in self._counts.items()})
        merged: dict[str, Tensor] = {}
        for part in parts:
            for key, counts in (part or {}).items():
                merged[key] = merged.get(key, 0) + counts
        return merged

    @torch.no_grad()
    def predict_labels(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W)`` -> ``(N, H, W)`` uint8 organ labels."""
        return self(x).argmax(1).to(torch.uint8)
