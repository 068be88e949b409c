"""Learnability: a small classifier learns the phantom's injuries from the images.

A synthetic cohort is written as DICOM, preprocessed through the real data module, a tiny
CNN-LSTM is trained on the training patients for a few CPU epochs, and
:func:`~ctvoco.inference.predict_submission` predicts the held-out test patients,
scored with the competition metric against two constant predictions made from the training
labels:

* the prevalence baseline (:func:`ctvoco.metrics.rsna.prevalence_predictions`), the
  reference the spec quotes (about 0.58 on the real data);
* the best constant under the weighted loss (class frequencies times the competition
  weights, normalised per target). Predicting a constant learnt from the labels alone beats
  the plain prevalence easily, so beating this one is what shows that the model read the
  images.

Settings that matter (found by trying; see the test's report for numbers):

* the cohort's field of view must cover the abdomen: ``32 x 10 mm`` = 320 mm. With
  ``32 x 7.5 mm`` (240 mm) a third of the bowel and half of the extravasation lesions lie
  outside the field of view: labelled but invisible;
* 32 training patients are too few: the model memorises them (training score about 0.2)
  and is at chance on the test patients. 96 patients generalise, mostly through the large
  high-grade liver lesions;
* no flips: the phantom's organs are lateralised (liver on the right, spleen on the left),
  so a model trained without flips is scored without flip test-time augmentation.

About 35-40 s on two idle CPU cores, so not marked ``slow``.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytorch_lightning as pl

from ctvoco.classify import InferenceSpecFromData, InjuryClassifier, SliceStackViews
from ctvoco.data.datamodules import RSNADataModule
from ctvoco.inference import predict_submission
from ctvoco.labels import (
    CLASS_WEIGHTS,
    PREDICTION_COLUMNS,
    TARGETS,
    classes_from_labels,
    prevalence_predictions,
)
from ctvoco.metrics import rsna_score
from ctvoco.synth.cohort import make_synthetic_cohort
from tests.training.module_args import build

COHORT = {
    "n_patients": 96,
    "n_test": 32,
    "n_flare": 0,
    "seed": 0,
    "shape": (32, 96, 96),
    "spacing": (10.0, 3.6, 3.6),
}
CACHE_SHAPE = [24, 72, 72]
EPOCHS = 10


def weighted_constant_predictions(labels: pd.DataFrame, patient_ids: list[int]) -> pd.DataFrame:
    """The constant minimising the weighted log loss of every target: ``p_c ∝ w_c n_c``."""
    classes = classes_from_labels(labels)
    values: list[float] = []
    for j, target in enumerate(TARGETS):
        weights = np.asarray(CLASS_WEIGHTS[target])
        mass = np.bincount(classes[:, j], minlength=len(weights)) * weights
        values += (mass / mass.sum()).tolist()
    frame = pd.DataFrame([values] * len(patient_ids), columns=list(PREDICTION_COLUMNS))
    frame.insert(0, "patient_id", patient_ids)
    return frame


def test_classifier_learns_injuries_beyond_the_prevalence_baseline(tmp_path):
    start = time.perf_counter()
    cohort = make_synthetic_cohort(tmp_path / "cohort", progress=False, **COHORT)
    views = SliceStackViews.plain(num_slices=12, crop=64, random_crop=True)
    datamodule = RSNADataModule(
        root=str(cohort.rsna_root),
        cache_dir=str(tmp_path / "cache"),
        purpose="classify",
        preprocess={"shape": CACHE_SHAPE},
        fold=None,
        num_workers=0,
        batch_size=4,
        views=views,
        val_views=replace(views, random_crop=False),
    )
    pl.seed_everything(0)
    module = build(
        InjuryClassifier,
        backbone="test_efficientnet",
        hidden=32,
        lr=2e-3,
        weight_decay=1e-4,
        warmup_steps=5,
        task="all",
        tta=False,
    )
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=5.0,
        callbacks=[InferenceSpecFromData(datamodule)],
    )
    trainer.fit(module, datamodule=datamodule)
    checkpoint = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(checkpoint)

    test_ids = cohort.test_labels["patient_id"].tolist()
    result = predict_submission(
        [checkpoint], cohort.rsna_root / "test_images", tmp_path / "submission.csv", device="cpu"
    )
    assert sorted(result.submission["patient_id"]) == sorted(test_ids)
    assert not result.failed_series
    model = rsna_score(cohort.test_labels, result.submission)
    prevalence = rsna_score(cohort.test_labels, prevalence_predictions(cohort.labels, test_ids))
    constant = rsna_score(
        cohort.test_labels, weighted_constant_predictions(cohort.labels, test_ids)
    )
    report = (
        f"model {model['score']:.4f} vs prevalence baseline {prevalence['score']:.4f} and best "
        f"weighted constant {constant['score']:.4f} on {len(test_ids)} test patients "
        f"({time.perf_counter() - start:.0f} s); model losses "
        + ", ".join(f"{k} {v:.3f}" for k, v in model.items())
    )
    print(report)
    assert model["score"] <= prevalence["score"] - 0.05, report
    assert model["score"] <= constant["score"] - 0.02, report
