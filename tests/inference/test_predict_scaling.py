"""``ctvoco-predict`` applies per-target probability scaling stored in the checkpoints or
given as ``scaling=scaling.json``, and says which factors it applied."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from ctvoco.errors import UserError
from ctvoco.inference import predict_submission
from ctvoco.labels import PREDICTION_COLUMNS
from tests.inference.test_predict import test_images, trained  # noqa: F401 (fixtures)

COLUMNS = list(PREDICTION_COLUMNS)
FACTORS = {"liver_low": 3.0, "liver_high": 5.0, "bowel_injury": 0.5}


def _plain(trained, test_images, tmp_path):  # noqa: F811
    return predict_submission(
        [trained.checkpoint],
        test_images,
        tmp_path / "plain" / "submission.csv",
        cache_dir=tmp_path / "cache",
        tta=False,
        device="cpu",
    )


def test_factors_stored_in_the_checkpoint_are_applied(
    trained,  # noqa: F811
    test_images,  # noqa: F811
    tmp_path,
    caplog,
):
    from ctvoco.classify.scaling import apply_scaling, store_in_checkpoint

    plain = _plain(trained, test_images, tmp_path)
    scaled_ckpt = shutil.copy(trained.checkpoint, tmp_path / "scaled.ckpt")
    store_in_checkpoint(scaled_ckpt, FACTORS, source="cv/scaling.json")
    with caplog.at_level(logging.INFO, logger="ctvoco"):
        result = predict_submission(
            [scaled_ckpt],
            test_images,
            tmp_path / "scaled" / "submission.csv",
            cache_dir=tmp_path / "cache",
            tta=False,
            device="cpu",
        )
    expected = apply_scaling(plain.submission, FACTORS)
    np.testing.assert_allclose(
        result.submission[COLUMNS].to_numpy(), expected[COLUMNS].to_numpy(), rtol=1e-9
    )
    assert not np.allclose(result.submission["liver_low"], plain.submission["liver_low"])
    written = pd.read_csv(tmp_path / "scaled" / "submission.csv")
    np.testing.assert_allclose(written[COLUMNS].to_numpy(), expected[COLUMNS].to_numpy())
    # the series predictions stay the model's own
    pd.testing.assert_frame_equal(result.series, plain.series)
    assert result.scaling == FACTORS
    messages = [r.getMessage() for r in caplog.records]
    assert any("liver_low=3" in m and "cv/scaling.json" in m for m in messages), messages


def test_scaling_json_overrides_and_false_turns_off(
    trained,  # noqa: F811
    test_images,  # noqa: F811
    tmp_path,
):
    from ctvoco.classify.scaling import apply_scaling, store_in_checkpoint, write_scaling_json

    plain = _plain(trained, test_images, tmp_path)
    scaled_ckpt = shutil.copy(trained.checkpoint, tmp_path / "scaled.ckpt")
    store_in_checkpoint(scaled_ckpt, FACTORS, source="x")
    other = {"spleen_high": 4.0}
    write_scaling_json(tmp_path / "scaling.json", other)
    kwargs = {"cache_dir": tmp_path / "cache", "tta": False, "device": "cpu"}
    from_json = predict_submission(
        [scaled_ckpt],
        test_images,
        tmp_path / "j" / "s.csv",
        scaling=tmp_path / "scaling.json",
        **kwargs,
    )
    np.testing.assert_allclose(
        from_json.submission[COLUMNS].to_numpy(),
        apply_scaling(plain.submission, other)[COLUMNS].to_numpy(),
    )
    off = predict_submission(
        [scaled_ckpt], test_images, tmp_path / "o" / "s.csv", scaling=False, **kwargs
    )
    pd.testing.assert_frame_equal(off.submission, plain.submission)
    assert off.scaling is None


def test_an_ensemble_whose_checkpoints_disagree_is_refused(
    trained,  # noqa: F811
    test_images,  # noqa: F811
    tmp_path,
):
    from ctvoco.classify.scaling import store_in_checkpoint

    a = shutil.copy(trained.checkpoint, tmp_path / "a.ckpt")
    store_in_checkpoint(a, FACTORS, source="x")
    with pytest.raises(UserError, match=r"scaling.*b\.ckpt|b\.ckpt.*scaling"):
        predict_submission(
            [a, shutil.copy(trained.other, tmp_path / "b.ckpt")],
            test_images,
            tmp_path / "s.csv",
            tta=False,
            device="cpu",
        )


@pytest.mark.parametrize(
    ("override", "expected"),
    [("scaling=false", False), ("scaling=null", None), ("scaling=/runs/s.json", "/runs/s.json")],
)
def test_the_scaling_key_of_ctvoco_predict(override, expected):
    from hydra import compose, initialize_config_module

    from ctvoco.cli.predict import _scaling_option

    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(config_name="predict", overrides=["checkpoint=a", "input=b", override])
    assert _scaling_option(cfg.scaling) == expected
    with pytest.raises(UserError, match=r"scaling=True is not a file"):
        _scaling_option(True)
