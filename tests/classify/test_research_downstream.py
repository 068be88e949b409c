"""The research code's downstream options: z-flip test-time augmentation, cyclic cosine LR."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from torch.utils.data import DataLoader

from ctvoco.classify.losses import probabilities
from ctvoco.classify.module import InjuryClassifier
from ctvoco.classify.tta import RESEARCH_TTA_FLIPS, TTA_FLIPS
from ctvoco.errors import UserError
from ctvoco.training.schedules import CyclicCosine
from tests.classify.test_module import _images, _module, _train_set, _trainer

AXES = {"z": 1, "h": -2, "w": -1}
"""Dims of a ``(B, S, C, H, W)`` batch: z reverses the slice order."""


def _mean_over(module: InjuryClassifier, x: torch.Tensor, flips) -> torch.Tensor:
    views = [x.flip([AXES[a] for a in axes]) if axes else x for axes in flips]
    return torch.stack([probabilities(module(v)) for v in views]).mean(0)


def test_the_model_depends_on_slice_order() -> None:
    module = _module().eval()
    x = _images()
    with torch.no_grad():
        assert not torch.allclose(
            module.predict_proba(x, tta=False), probabilities(module(x.flip(1)))
        )


def test_z_flip_tta_averages_the_reversed_stack() -> None:
    module = _module(tta_flips=[[], ["z"]]).eval()
    x = _images()
    with torch.no_grad():
        got = module.predict_proba(x, tta=True)
        expected = (probabilities(module(x)) + probabilities(module(x.flip(1)))) / 2
        plain = module.predict_proba(x, tta=False)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-6)


def test_research_tta_is_the_mean_over_its_five_views() -> None:
    assert RESEARCH_TTA_FLIPS == ((), ("z", "h", "w"), ("z", "h"), ("z", "w"), ("h", "w"))
    module = _module(tta_flips=[list(f) for f in RESEARCH_TTA_FLIPS]).eval()
    x = _images()
    with torch.no_grad():
        got = module.predict_proba(x)
        torch.testing.assert_close(
            got, _mean_over(module, x, RESEARCH_TTA_FLIPS), atol=1e-6, rtol=0
        )


def test_default_tta_flips_are_the_four_in_plane_flips() -> None:
    module = _module().eval()
    assert [tuple(f) for f in module.hparams.tta_flips] == [(), ("w",), ("h",), ("h", "w")]
    x = _images()
    with torch.no_grad():
        plane = [x.flip(dims) if dims else x for dims in TTA_FLIPS]
        expected = torch.stack([probabilities(module(v)) for v in plane]).mean(0)
        torch.testing.assert_close(module.predict_proba(x), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("flips", [[["x"]], [["z", "z"]], [], "zhw", [[], "z"], [[1]]])
def test_bad_tta_flips_are_a_user_error(flips) -> None:
    with pytest.raises(UserError, match=r"^tta_flips must be a non-empty list of flips"):
        _module(tta_flips=flips)


# --------------------------------------------------------------------------- cyclic cosine
class LrRecorder(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_cyclic_cosine_returns_to_the_peak_at_twice_the_half_period() -> None:
    lr, half, floor = 1e-3, 2, 0.1
    cyclic = functools.partial(CyclicCosine, half_period=half, min_lr_ratio=floor)
    module = _module(lr=lr, scheduler=cyclic)
    recorder = LrRecorder()
    _trainer(max_steps=9, callbacks=[recorder]).fit(
        module, train_dataloaders=DataLoader(_train_set(n=4), batch_size=1)
    )
    mid = floor + (1 - floor) * 0.5
    expected = [1.0, mid, floor, mid, 1.0, mid, floor, mid, 1.0]
    assert recorder.lrs == pytest.approx([lr * f for f in expected], rel=1e-6)


def test_default_schedule_is_the_warmup_cosine_over_the_run() -> None:
    module = _module(lr=1e-3)
    recorder = LrRecorder()
    _trainer(max_steps=4, callbacks=[recorder]).fit(
        module, train_dataloaders=DataLoader(_train_set(n=4), batch_size=1)
    )
    assert recorder.lrs[0] == pytest.approx(1e-3)
    assert recorder.lrs == sorted(recorder.lrs, reverse=True)
    assert recorder.lrs[-1] < 0.5e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"scheduler": {"_target_": "ctvoco.training.schedules.Step"}},
            r"scheduler\._target_='ctvoco\.training\.schedules\.Step' does not exist",
        ),
        (
            {"scheduler": functools.partial(CyclicCosine, half_period=0)},
            r"scheduler\.half_period=0",
        ),
    ],
)
def test_bad_schedule_options_are_user_errors(kwargs, match) -> None:
    with pytest.raises(UserError, match=match):
        _module(**kwargs)


# --------------------------------------------------------------------------- the experiment
def test_rsna_voco_takes_the_research_schedule_and_tta() -> None:
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(
            config_name="finetune",
            overrides=["+experiment=rsna_voco", "pretrained=/tmp/b.pt", "paths.output_dir=/tmp/x"],
        )
    module = cfg.model.module
    schedule = module.scheduler
    assert (schedule._target_, schedule.half_period, schedule.min_lr_ratio) == (
        "ctvoco.training.schedules.CyclicCosine",
        5000,
        0.1,
    )
    optimizer = module.optimizer
    assert (optimizer.lr, optimizer.weight_decay, schedule.warmup_steps) == (1.25e-4, 1e-5, 0)
    assert module.tta is True
    assert [tuple(f) for f in module.tta_flips] == list(RESEARCH_TTA_FLIPS)


def test_classifier_defaults_keep_the_run_cosine_and_in_plane_flips() -> None:
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(config_name="finetune", overrides=["paths.output_dir=/tmp/x"])
    module = cfg.model.module
    assert module.scheduler._target_ == "ctvoco.training.schedules.WarmupCosine"
    assert "half_period" not in module.scheduler
    assert [list(f) for f in module.tta_flips] == [[], ["w"], ["h"], ["h", "w"]]
