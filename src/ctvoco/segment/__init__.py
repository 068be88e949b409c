"""Organ segmentation: a U-Net on a timm encoder, its Dice, its module, mask prediction.

Its training data (:mod:`ctvoco.data.segmentation`) are cached series with their masks.
"""

from ctvoco.segment.dice import organ_dice, overlap_counts
from ctvoco.segment.module import OrganSegmenter
from ctvoco.segment.net import organ_unet, register_timm_encoder
from ctvoco.segment.predict import predict_cache, predict_series

__all__ = [
    "OrganSegmenter",
    "organ_dice",
    "organ_unet",
    "overlap_counts",
    "predict_cache",
    "predict_series",
    "register_timm_encoder",
]
