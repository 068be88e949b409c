"""Per-target probability scaling: fitted on out-of-fold predictions, applied to a submission."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ctvoco.errors import DataError
from ctvoco.labels import (
    PREDICTION_COLUMNS,
    TARGET_CLASSES,
    TARGETS,
    labels_from_classes,
    target_columns,
)
from ctvoco.metrics import rsna_score

COLUMNS = list(PREDICTION_COLUMNS)


def synthetic_oof(n: int = 600, seed: int = 0, too_low: str = "liver", shrink: float = 0.25):
    """Labels drawn from known class probabilities, and predictions that are those
    probabilities except that ``too_low``'s injury classes are shrunk by ``shrink``."""
    rng = np.random.default_rng(seed)
    probs, classes = [], []
    for target in TARGETS:
        k = len(TARGET_CLASSES[target])
        p = rng.dirichlet([6.0] + [1.0] * (k - 1), size=n)
        classes.append(np.array([rng.choice(k, p=row) for row in p]))
        if target == too_low:
            p = p.copy()
            p[:, 1:] *= shrink
            p /= p.sum(axis=1, keepdims=True)
        probs.append(p)
    ids = list(range(100, 100 + n))
    labels = labels_from_classes(ids, np.stack(classes, axis=1))
    oof = pd.DataFrame(np.concatenate(probs, axis=1), columns=COLUMNS)
    oof.insert(0, "series_id", [i * 10 for i in ids])
    oof.insert(0, "patient_id", ids)
    return oof, labels


def test_fit_recovers_a_factor_above_one_for_a_target_predicted_too_low():
    from ctvoco.classify.scaling import apply_scaling, fit_scaling

    oof, labels = synthetic_oof()
    factors = fit_scaling(oof, labels)
    healthy = {target_columns(t)[0] for t in TARGETS}
    assert set(factors) == set(COLUMNS) - healthy
    assert factors["liver_low"] > 1 and factors["liver_high"] > 1
    # beyond what the metric's class weights ask of calibrated predictions (kidney)
    assert factors["liver_low"] > 2 * factors["kidney_low"]
    assert factors["liver_high"] > 2 * factors["kidney_high"]
    before = rsna_score(labels, oof)
    after = rsna_score(labels, apply_scaling(oof, factors))
    assert after["score"] < before["score"] - 0.01
    assert after["liver"] < before["liver"]


def test_apply_scaling_with_unit_factors_is_the_identity():
    from ctvoco.classify.scaling import apply_scaling

    oof, _ = synthetic_oof(n=20)
    oof.loc[0, COLUMNS] *= 3.0  # groups that do not sum to 1 keep their sums too
    unit = dict.fromkeys(COLUMNS, 1.0)
    pd.testing.assert_frame_equal(apply_scaling(oof, unit), oof)
    pd.testing.assert_frame_equal(apply_scaling(oof, {}), oof)


def test_apply_scaling_renormalises_each_group_to_its_sum():
    from ctvoco.classify.scaling import apply_scaling

    oof, _ = synthetic_oof(n=10)
    scaled = apply_scaling(oof, {"spleen_high": 3.0, "bowel_injury": 0.5})
    for target in TARGETS:
        cols = target_columns(target)
        np.testing.assert_allclose(scaled[cols].sum(axis=1), oof[cols].sum(axis=1))
    ratio = scaled["spleen_high"] / scaled["spleen_low"]
    np.testing.assert_allclose(ratio, 3.0 * oof["spleen_high"] / oof["spleen_low"])
    pd.testing.assert_series_equal(scaled["liver_low"], oof["liver_low"])


@pytest.mark.parametrize(
    ("factors", "message"),
    [
        ({"liver_medium": 2.0}, "liver_medium"),
        ({"liver_low": 0.0}, r"liver_low.*positive"),
        ({"liver_low": float("nan")}, "liver_low"),
        ({"liver_low": "big"}, "liver_low"),
    ],
)
def test_bad_factors_are_refused_naming_the_key(factors, message):
    from ctvoco.classify.scaling import check_factors

    with pytest.raises(DataError, match=message):
        check_factors(factors, "scaling.json")


def test_scaling_json_round_trip(tmp_path):
    from ctvoco.classify.scaling import read_scaling_json, write_scaling_json

    path = tmp_path / "scaling.json"
    write_scaling_json(path, {"liver_low": 2.5, "bowel_injury": 1.5}, scores={"cross_fitted": 0.5})
    assert read_scaling_json(path) == {"liver_low": 2.5, "bowel_injury": 1.5}
    assert json.loads(path.read_text())["scores"] == {"cross_fitted": 0.5}
    path.write_text('{"factors": {"liver_low": -1}}')
    with pytest.raises(DataError, match=r"scaling\.json.*liver_low"):
        read_scaling_json(path)
    path.write_text("not json")
    with pytest.raises(DataError, match=r"scaling\.json"):
        read_scaling_json(path)


def test_factors_survive_a_checkpoint_round_trip(tmp_path):
    from ctvoco.classify.scaling import checkpoint_factors, store_in_checkpoint

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, path)
    factors = {"liver_low": 2.5, "spleen_high": 0.75}
    store_in_checkpoint(path, factors, source="runs/scaling.json")
    raw = torch.load(path, map_location="cpu", weights_only=True)  # still weights-only data
    assert torch.equal(raw["state_dict"]["w"], torch.ones(2))
    assert checkpoint_factors(raw, path) == factors
    assert raw["ctvoco_scaling"]["source"] == "runs/scaling.json"
    assert checkpoint_factors({"state_dict": {}}, path) is None


def test_the_search_scores_exactly_as_the_metric_does():
    from ctvoco.classify.scaling import _score_of_log_factors, apply_scaling
    from ctvoco.labels import aggregate_predictions

    oof, labels = synthetic_oof(n=40, seed=3)
    second = oof.iloc[:10].copy()  # a second series for ten patients
    second["series_id"] += 1
    second[COLUMNS] = second[COLUMNS].to_numpy()[::-1]
    oof = pd.concat([oof, second], ignore_index=True)
    factors = dict(zip(COLUMNS, np.linspace(0.3, 4.0, len(COLUMNS)), strict=True))
    score = _score_of_log_factors(oof, labels, "max")
    log_factors = np.log([factors[c] for c in COLUMNS])
    expected = rsna_score(labels, apply_scaling(aggregate_predictions(oof), factors))["score"]
    assert score(log_factors) == pytest.approx(expected, rel=1e-12)
    assert score(np.zeros(len(COLUMNS))) == pytest.approx(rsna_score(labels, oof)["score"])
