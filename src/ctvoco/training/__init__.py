"""Training helpers shared by pretraining and classification."""

from ctvoco.training.guards import NonFiniteGuard, NonFiniteLossError
from ctvoco.training.schedules import warmup_cosine

__all__ = ["NonFiniteGuard", "NonFiniteLossError", "warmup_cosine"]
