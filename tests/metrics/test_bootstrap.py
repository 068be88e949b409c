"""The patient-bootstrap interval of the competition score (:mod:`ctvoco.metrics.bootstrap`)."""

from __future__ import annotations

import pytest

from ctvoco.metrics import rsna_score
from ctvoco.metrics.bootstrap import bootstrap_interval, patient_arrays
from ctvoco.metrics.rsna import score_arrays
from tests.classify.test_scaling import synthetic_oof


def test_the_bootstrap_interval_holds_the_score_and_repeats_with_its_seed():
    oof, labels = synthetic_oof(n=300, seed=5)
    onehot, probs = patient_arrays(labels, oof)
    point = rsna_score(labels, oof)["score"]
    assert score_arrays(onehot, probs)["score"] == pytest.approx(point, rel=1e-12)
    low, high = bootstrap_interval(onehot, probs, n_resamples=300, seed=7)
    assert low < point < high
    assert bootstrap_interval(onehot, probs, n_resamples=300, seed=7) == (low, high)
    assert bootstrap_interval(onehot, probs, n_resamples=300, seed=8) != (low, high)
