"""Grid, crop size and random-crop count: the views are the one source, a differing model is refused.

The module takes them from the views it is built with; data modules refuse to feed it
views of another geometry."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl

from ctvoco.data import FLAREDataModule
from ctvoco.errors import UserError
from ctvoco.voco.module import VoCoPretrainer
from ctvoco.voco.views import VoCoViews

TINY = {"backbone": "test_efficientnet", "head_hidden": 16, "head_out": 8}
VIEWS = VoCoViews(grid=2, crop_size=32, num_random=2, num_slices=2, depth=4)


@pytest.fixture(scope="module")
def matching() -> VoCoPretrainer:
    return VoCoPretrainer(**TINY, views=VoCoViews(grid=2, crop_size=32, num_random=2))


@pytest.mark.parametrize(("key", "value"), [("grid", 3), ("crop_size", 48), ("num_random", 4)])
def test_a_model_that_disagrees_with_its_views_is_refused(key, value):
    geometry = {"grid": 2, "crop_size": 32, "num_random": 2, key: value}
    model = VoCoPretrainer(**TINY, views=VoCoViews(**geometry))
    with pytest.raises(UserError) as info:
        VIEWS.check_model(model)
    message = str(info.value)
    assert f"model.module.{key}={value}" in message
    assert f"model.views.{key}={getattr(VIEWS, key)}" in message


def test_a_model_that_agrees_with_its_views_is_accepted(matching):
    VIEWS.check_model(matching)


def test_training_refuses_the_mismatch_before_any_data_work(tmp_path):
    """Through Lightning: the data module checks its views against the model it feeds."""
    model = VoCoPretrainer(**TINY, views=VoCoViews(grid=3, crop_size=32, num_random=2))
    data = FLAREDataModule(
        root=str(tmp_path / "no-such-folder"),
        cache_dir=str(tmp_path / "cache"),
        views=VIEWS,
        num_workers=0,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(UserError, match=r"model\.module\.grid=3.*model\.views\.grid=2"):
        trainer.fit(model, datamodule=data)
    assert not (tmp_path / "cache").exists()
