"""Evaluation metrics: the RSNA 2023 Abdominal Trauma Detection score and its AUCs."""

from __future__ import annotations

from ctvoco.metrics.rsna import EPS, rsna_score, score_arrays, score_predictions, target_auc

__all__ = ["EPS", "rsna_score", "score_arrays", "score_predictions", "target_auc"]
