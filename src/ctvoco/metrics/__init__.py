"""Evaluation metrics: the RSNA 2023 Abdominal Trauma Detection score and its AUCs, the
constant-prediction floors it is compared with, its patient-bootstrap interval, and the
paired seed-and-patient bootstrap statistics of arms trained with several seeds."""

from __future__ import annotations

from ctvoco.metrics.bootstrap import bootstrap_interval, patient_arrays
from ctvoco.metrics.floors import constant_floors, optimal_constant, prevalence_constant
from ctvoco.metrics.paired import (
    PairedDifference,
    auc_intervals,
    floor_intervals,
    paired_difference,
    score_interval,
)
from ctvoco.metrics.rsna import (
    EPS,
    rsna_score,
    score_arrays,
    score_predictions,
    target_auc,
    target_auc_arrays,
)

__all__ = [
    "EPS",
    "PairedDifference",
    "auc_intervals",
    "bootstrap_interval",
    "constant_floors",
    "floor_intervals",
    "optimal_constant",
    "paired_difference",
    "patient_arrays",
    "prevalence_constant",
    "rsna_score",
    "score_arrays",
    "score_interval",
    "score_predictions",
    "target_auc",
    "target_auc_arrays",
]
