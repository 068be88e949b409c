"""The optional per-slice head trained on image-level labels (masked BCE)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from ctvoco.classify.losses import masked_slice_loss
from ctvoco.classify.module import InjuryClassifier
from ctvoco.classify.views import SliceStackViews
from ctvoco.data.datamodules import RSNADataModule
from ctvoco.errors import UserError
from tests.conftest import TINY_SHAPE

TINY = {"backbone": "test_efficientnet", "hidden": 8}


def test_masked_loss_matches_a_hand_computed_value():
    logits = torch.tensor([[[0.0, 2.0], [1.0, -1.0]]])  # (B=1, S=2, 2)
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1.0, 0.0]])  # extravasation unknown: left out
    expected = (math.log(2.0) + math.log(1.0 + math.e)) / 2
    assert masked_slice_loss(logits, targets, mask).item() == pytest.approx(expected, rel=1e-6)


def test_masked_loss_with_nothing_known_is_zero_with_a_gradient():
    logits = torch.zeros(2, 3, 2, requires_grad=True)
    loss = masked_slice_loss(logits, torch.ones(2, 3, 2), torch.zeros(2, 2))
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad is not None


def test_weight_zero_adds_no_parameters():
    off = set(InjuryClassifier(**TINY).state_dict())
    on = set(InjuryClassifier(**TINY, image_loss_weight=1.0).state_dict())
    assert not any("slice_head" in k for k in off)
    assert on - off == {"net.slice_head.weight", "net.slice_head.bias"}


def test_negative_weight_is_a_user_error():
    with pytest.raises(UserError, match=r"^image_loss_weight must be 0 \(off\) or positive"):
        InjuryClassifier(**TINY, image_loss_weight=-1.0)


def test_slice_logits_come_per_slice():
    module = InjuryClassifier(**TINY, image_loss_weight=1.0)
    out = module(torch.randint(0, 255, (2, 3, 1, 32, 32), dtype=torch.uint8))
    assert out["slices"].shape == (2, 3, 2)


def test_two_step_finetune_logs_the_image_loss(tiny_cohort, tmp_path):
    assert (tiny_cohort.rsna_root / "image_level_labels.csv").exists()
    data = RSNADataModule(
        root=str(tiny_cohort.rsna_root),
        cache_dir=str(tmp_path / "cache"),
        preprocess={"shape": list(TINY_SHAPE)},
        views=SliceStackViews(num_slices=4, crop=48),
        num_workers=0,
        batch_size=2,
    )
    torch.manual_seed(0)
    module = InjuryClassifier(**TINY, image_loss_weight=1.0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path, name="run"),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    metrics = pd.read_csv(next((tmp_path / "run").rglob("metrics.csv")))
    image_loss = metrics["train/image_loss"].dropna()
    assert len(image_loss) == 2
    assert image_loss.map(math.isfinite).all()
