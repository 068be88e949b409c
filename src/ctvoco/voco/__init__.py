"""2D VoCo pretraining: overlap targets, losses, projection head, EMA teacher, position metrics.

Reference: Wu, Zhuang, Xu, Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning
Framework for 3D Medical Image Analysis", CVPR 2024; 2D-VoCo, arXiv 2601.14593.
"""

from __future__ import annotations

from ctvoco.voco.ema import cosine_momentum, update_momentum
from ctvoco.voco.export import BackboneExport
from ctvoco.voco.heads import HEAD_NORMS, ProjectionHead
from ctvoco.voco.losses import (
    VoCoLoss,
    VoCoLossOutput,
    base_regularization_loss,
    inter_volume_loss,
    intra_volume_loss,
    similarity,
    voco_ce,
    voco_ce_terms,
)
from ctvoco.voco.module import VoCoPretrainer
from ctvoco.voco.position import average_ranks, position_errors, spearman_correlation
from ctvoco.voco.targets import (
    crop_starts,
    overlap_targets,
    sample_center_range,
    sample_random_centers,
    valid_center_range,
)
from ctvoco.voco.views import VoCoViews, foreground_box

__all__ = [
    "HEAD_NORMS",
    "BackboneExport",
    "ProjectionHead",
    "VoCoLoss",
    "VoCoLossOutput",
    "VoCoPretrainer",
    "VoCoViews",
    "average_ranks",
    "base_regularization_loss",
    "cosine_momentum",
    "crop_starts",
    "foreground_box",
    "inter_volume_loss",
    "intra_volume_loss",
    "overlap_targets",
    "position_errors",
    "sample_center_range",
    "sample_random_centers",
    "similarity",
    "spearman_correlation",
    "update_momentum",
    "valid_center_range",
    "voco_ce",
    "voco_ce_terms",
]
