"""Evaluation metrics: the RSNA 2023 Abdominal Trauma Detection score and its AUCs, the
constant-prediction floors it is compared with, and its patient-bootstrap interval."""

from __future__ import annotations

from ctvoco.metrics.bootstrap import bootstrap_interval, patient_arrays
from ctvoco.metrics.floors import constant_floors, optimal_constant, prevalence_constant
from ctvoco.metrics.rsna import EPS, rsna_score, score_arrays, score_predictions, target_auc

__all__ = [
    "EPS",
    "bootstrap_interval",
    "constant_floors",
    "optimal_constant",
    "patient_arrays",
    "prevalence_constant",
    "rsna_score",
    "score_arrays",
    "score_predictions",
    "target_auc",
]
