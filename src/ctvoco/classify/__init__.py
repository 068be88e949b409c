"""CNN-LSTM injury classification: views, network, losses, LightningModule, inference spec.

Prediction from checkpoints is :mod:`ctvoco.inference`.
"""

from ctvoco.classify.losses import TASKS, head_loss, injury_loss, probabilities, task_targets
from ctvoco.classify.module import InjuryClassifier, task_score
from ctvoco.classify.net import InjuryNet
from ctvoco.classify.spec import InferenceSpec, InferenceSpecFromData
from ctvoco.classify.views import SliceStackViews

__all__ = [
    "TASKS",
    "InferenceSpec",
    "InferenceSpecFromData",
    "InjuryClassifier",
    "InjuryNet",
    "SliceStackViews",
    "head_loss",
    "injury_loss",
    "probabilities",
    "task_score",
    "task_targets",
]
