"""The classifier's inference contract: :class:`ctvoco.classify.spec.InferenceSpec`.

Given by the caller, stored in the checkpoint and read back typed; checkpoints that record
``data_config`` and ``prevalence`` in their hyper-parameters still read.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from ctvoco.classify.module import InjuryClassifier
from ctvoco.classify.spec import CHECKPOINT_KEY, InferenceSpec
from ctvoco.classify.views import SliceStackViews
from ctvoco.errors import DataError
from ctvoco.preprocessing.pipeline import ALGORITHM_VERSION, PreprocessConfig
from tests.classify.test_module import _train_set, _trainer
from tests.training.module_args import build

PREVALENCE = tuple([0.5, 0.5] + [0.25, 0.75] + [0.6, 0.3, 0.1] * 3)
CONF = Path(__file__).resolve().parents[2] / "conf" / "model" / "classifier.yaml"


def _spec(**views: object) -> InferenceSpec:
    return InferenceSpec(
        preprocess=PreprocessConfig(shape=(16, 64, 64)),
        views=SliceStackViews(num_slices=4, crop=32, **views),
        prevalence=PREVALENCE,
    )


def test_the_spec_keeps_the_evaluation_views() -> None:
    spec = _spec()
    assert spec.views == SliceStackViews(num_slices=4, crop=32).for_eval()
    assert spec.preprocess_version == ALGORITHM_VERSION


def test_the_spec_round_trips_through_plain_values() -> None:
    spec = _spec()
    values = spec.to_dict()
    assert values["preprocess"]["algorithm_version"] == ALGORITHM_VERSION
    assert values["views"]["crop"] == 32
    assert InferenceSpec.from_dict(values, "here") == spec


def test_a_prevalence_of_other_length_is_refused() -> None:
    with pytest.raises(DataError, match="13 class frequencies"):
        InferenceSpec(PreprocessConfig(), SliceStackViews(), prevalence=(0.5, 0.5))


def test_a_checkpoint_of_the_earlier_layout_still_reads() -> None:
    spec = _spec()
    legacy = {
        "hyper_parameters": {
            "data_config": {
                "preprocess": spec.to_dict()["preprocess"],
                "views": {"crop": 32, "num_slices": 4, "random_crop": True},
            },
            "prevalence": list(PREVALENCE),
        }
    }
    assert InferenceSpec.from_checkpoint(legacy, "old.ckpt") == spec


def test_a_checkpoint_without_a_spec_is_a_data_error_naming_it() -> None:
    with pytest.raises(DataError, match=r"bare\.ckpt: the checkpoint does not record"):
        InferenceSpec.from_checkpoint({"hyper_parameters": {"lr": 1e-3}}, "bare.ckpt")


def test_the_module_takes_no_runtime_state_arguments() -> None:
    params = inspect.signature(InjuryClassifier.__init__).parameters
    assert "data_config" not in params and "prevalence" not in params
    config = yaml.safe_load(CONF.read_text())["module"]
    assert "data_config" not in config and "prevalence" not in config


def test_the_module_stores_its_spec_in_the_checkpoint(tmp_path) -> None:
    spec = _spec()
    module = build(
        InjuryClassifier, backbone="test_efficientnet", hidden=8, lr=1e-3, inference=spec
    )
    trainer = _trainer(max_steps=1)
    trainer.fit(module, train_dataloaders=DataLoader(_train_set(), batch_size=2))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw[CHECKPOINT_KEY] == spec.to_dict()
    assert InferenceSpec.from_checkpoint(raw, path) == spec
    loaded = InjuryClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert loaded.inference == spec


def test_the_metric_loss_uses_the_spec_prevalence() -> None:
    from ctvoco.classify.losses import mean_class_weights

    assert InjuryClassifier(backbone="test_efficientnet", hidden=8)._mean_weights() is None
    module = InjuryClassifier(backbone="test_efficientnet", hidden=8, inference=_spec())
    assert module._mean_weights() == mean_class_weights(PREVALENCE)


def test_a_data_module_gives_its_spec(tiny_cohort, tmp_path) -> None:
    from ctvoco.data.datamodules import RSNADataModule

    datamodule = RSNADataModule(
        root=str(tiny_cohort.rsna_root),
        cache_dir=str(tmp_path / "cache"),
        preprocess={"shape": [16, 64, 64]},
        num_workers=0,
        preprocess_workers=0,
        fold=None,
        views=SliceStackViews(num_slices=4, crop=48),
    )
    datamodule.prepare_data()
    spec = InferenceSpec.from_datamodule(datamodule)
    assert spec.preprocess == datamodule.preprocess
    assert spec.views == SliceStackViews(num_slices=4, crop=48).for_eval()
    assert spec.prevalence == pytest.approx(datamodule.class_prevalence())


def test_fitting_on_a_data_module_records_its_spec_without_being_told(tiny_cohort, tmp_path):
    import pytorch_lightning as pl

    from ctvoco.data.datamodules import RSNADataModule

    datamodule = RSNADataModule(
        root=str(tiny_cohort.rsna_root),
        cache_dir=str(tmp_path / "cache"),
        preprocess={"shape": [16, 64, 64]},
        num_workers=0,
        preprocess_workers=0,
        batch_size=2,
        fold=None,
        views=SliceStackViews.plain(num_slices=4, crop=48),
    )
    module = InjuryClassifier(backbone="test_efficientnet", hidden=8)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=datamodule)
    assert module.inference == InferenceSpec.from_datamodule(datamodule)
    assert module._mean_weights() is not None
