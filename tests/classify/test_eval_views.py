"""Evaluation views come from one ``for_eval()`` method on each views class."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import ctvoco.cli.training as training
from ctvoco.classify.views import SliceStackViews
from ctvoco.voco.views import VoCoViews

SOURCE = Path(__file__).resolve().parents[2] / "src" / "ctvoco"


def test_slice_stack_for_eval_is_the_centre_crop_without_augmentation() -> None:
    views = SliceStackViews(num_slices=6, crop=40, rotate_degrees=20.0)
    evaluation = views.for_eval()
    assert evaluation.random_crop is False
    assert not evaluation.augments
    assert all(
        getattr(evaluation, f.name) == 0.0 for f in fields(views) if f.name.endswith("_prob")
    )
    # what is not augmentation is kept
    assert (evaluation.num_slices, evaluation.crop, evaluation.rotate_degrees) == (6, 40, 20.0)
    assert evaluation == SliceStackViews.plain(num_slices=6, crop=40, rotate_degrees=20.0)
    assert evaluation.for_eval() == evaluation


def test_voco_for_eval_switches_off_every_augmentation_only() -> None:
    views = VoCoViews(
        grid=2,
        crop_size=16,
        contrast_jitter=0.2,
        brightness_jitter=0.1,
        noise_std=2.0,
        flip_prob=0.5,
        rot90_prob=0.25,
    )
    evaluation = views.for_eval()
    assert (
        evaluation.contrast_jitter,
        evaluation.brightness_jitter,
        evaluation.noise_std,
        evaluation.flip_prob,
        evaluation.rot90_prob,
    ) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert not evaluation.geometric
    assert (evaluation.grid, evaluation.crop_size, evaluation.num_random) == (2, 16, 2)


def test_no_other_helper_makes_evaluation_views() -> None:
    assert not hasattr(training, "without_augmentation")
    offenders = [
        str(path.relative_to(SOURCE))
        for path in SOURCE.rglob("*.py")
        if any(name in path.read_text() for name in ("without_augmentation", "_eval_views"))
    ]
    assert offenders == []
