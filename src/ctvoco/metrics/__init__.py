"""Evaluation metrics: the RSNA 2023 Abdominal Trauma Detection score and helpers."""

from __future__ import annotations

from ctvoco.metrics.rsna import (
    AGGREGATIONS,
    EPS,
    aggregate_predictions,
    classes_from_labels,
    labels_from_classes,
    prevalence_predictions,
    rsna_score,
    target_auc,
)

__all__ = [
    "AGGREGATIONS",
    "EPS",
    "aggregate_predictions",
    "classes_from_labels",
    "labels_from_classes",
    "prevalence_predictions",
    "rsna_score",
    "target_auc",
]
