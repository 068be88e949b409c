"""OrganSegmenter learns the phantom's organs from a few masked series."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ctvoco.cache import VolumeCache
from ctvoco.data.segmentation import MaskedSlices, split_by_patient
from ctvoco.segment.module import OrganSegmenter

SMALL = (32, 32, 16, 16, 16)


def loaders(cache_dir, context=1):
    keys = VolumeCache(cache_dir).mask_keys()
    train, val = split_by_patient(cache_dir, keys, 0.25, seed=0)
    return (
        DataLoader(MaskedSlices(cache_dir, train, context=context), batch_size=8, shuffle=True),
        DataLoader(MaskedSlices(cache_dir, val, context=context), batch_size=8),
    )


def trainer(steps, tmp_path):
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )


def test_training_raises_the_validation_dice(masked_cache, tmp_path):
    pl.seed_everything(0, verbose=False)
    train, val = loaders(masked_cache)
    module = OrganSegmenter("test_efficientnet", context=1, decoder_channels=SMALL)
    run = trainer(0, tmp_path)
    run.validate(module, val, verbose=False)
    before = module.last_dice
    run = trainer(160, tmp_path)
    run.fit(module, train, val)
    after = module.last_dice
    # at 32 x 32 pixels and 160 steps the liver, the largest organ, is learned first
    assert after["liver"] > 0.6, after
    assert after["mean"] > before["mean"] + 0.1, (before, after)
    logged = {k: float(v) for k, v in run.callback_metrics.items()}
    assert math.isclose(logged["val/dice_liver"], after["liver"], rel_tol=1e-5)
    assert "val/dice_mean" in logged and "train/loss" in logged


def test_inputs_are_windows_times_slices():
    module = OrganSegmenter("test_efficientnet", context=2, windows=2, decoder_channels=SMALL)
    assert module.in_chans == 10
    out = module.eval().predict_labels(torch.rand(1, 10, 40, 56))
    assert out.shape == (1, 40, 56) and out.dtype == torch.uint8
    assert module.hparams.organs["bowel"] == 5 and module.num_classes == 6
