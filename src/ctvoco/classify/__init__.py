"""CNN-LSTM injury classification: views, network, losses, LightningModule, prediction."""

from ctvoco.classify.losses import TASKS, head_loss, injury_loss, probabilities, task_targets
from ctvoco.classify.module import (
    InjuryClassifier,
    freeze_backbone_stages,
    score_predictions,
    task_score,
)
from ctvoco.classify.net import InjuryNet
from ctvoco.classify.views import SliceStackViews

__all__ = [
    "TASKS",
    "InjuryClassifier",
    "InjuryNet",
    "SliceStackViews",
    "freeze_backbone_stages",
    "head_loss",
    "injury_loss",
    "probabilities",
    "score_predictions",
    "task_score",
    "task_targets",
]
