"""``oof_from``: which weights a fold's out-of-fold predictions come from (``best``, ``last``,
``step:N``, ``epoch:N``), and how ``metrics.json`` records it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from pytorch_lightning.callbacks import EarlyStopping

from ctvoco.errors import UserError
from ctvoco.training.checkpoints import ModelCheckpoint
from tests.reports.test_plots import _labels, _predictions
from tests.training.test_checkpoints import WorseningModel, loader


def test_rules_parse_and_bad_ones_name_the_key():
    from ctvoco.training.oof import parse_oof_rule

    assert [str(parse_oof_rule(v)) for v in ("best", "last", "step:100", "epoch:3")] == [
        "best",
        "last",
        "step:100",
        "epoch:3",
    ]
    for bad in ("median", "step:0", "step:x", "epoch:", 5, None):
        with pytest.raises(UserError, match=r"oof_from=.*best, last, step:N or epoch:N"):
            parse_oof_rule(bad)


def test_finetune_defaults_to_the_last_weights():
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(config_name="finetune")
    assert cfg.oof_from == "last"


@pytest.mark.parametrize(
    ("rule", "trainer_options", "message"),
    [
        ("step:20", {"max_steps": 10}, r"oof_from=step:20.*trainer\.max_steps=10"),
        ("epoch:5", {"max_epochs": 3}, r"oof_from=epoch:5.*trainer\.max_epochs=3"),
    ],
)
def test_an_unreachable_fixed_point_is_refused_before_training(rule, trainer_options, message):
    from ctvoco.training.oof import check_reachable, parse_oof_rule

    with pytest.raises(UserError, match=message):
        check_reachable(parse_oof_rule(rule), trainer_options)
    check_reachable(parse_oof_rule(rule), {"max_steps": 100, "max_epochs": 100})


def _fit(tmp_path: Path, rule: str, early_stopping: bool = False, **options):
    from ctvoco.training.oof import FixedPointCheckpoint, parse_oof_rule

    parsed = parse_oof_rule(rule)
    fixed = FixedPointCheckpoint(parsed, tmp_path / "checkpoints")
    best = ModelCheckpoint(
        dirpath=tmp_path / "checkpoints",
        filename="best-{step}",
        monitor="val/score",
        save_last=True,
        save_top_k=1,
    )
    callbacks = [best, fixed]
    if early_stopping:
        callbacks.append(EarlyStopping(monitor="val/score", patience=100))
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        **options,
    )
    trainer.fit(WorseningModel(), loader(3), loader(1))
    return trainer, parsed, fixed


def test_step_rule_evaluates_the_weights_saved_at_that_step(tmp_path):
    from ctvoco.training.oof import evaluation_weights

    trainer, rule, fixed = _fit(tmp_path, "step:4", max_steps=9)
    weights = evaluation_weights(rule, trainer, fixed)
    assert (
        weights.ckpt_path
        == weights.checkpoint
        == str(tmp_path / "checkpoints/oof-step0000004.ckpt")
    )
    assert torch.load(weights.ckpt_path, weights_only=True)["global_step"] == 4
    assert weights.step == 4 and weights.selected_on_fold is False


def test_epoch_rule_evaluates_the_weights_at_the_end_of_that_epoch(tmp_path):
    from ctvoco.training.oof import evaluation_weights

    trainer, rule, fixed = _fit(tmp_path, "epoch:2", max_epochs=3)
    weights = evaluation_weights(rule, trainer, fixed)
    assert Path(weights.ckpt_path).name == "oof-epoch002.ckpt"
    assert torch.load(weights.ckpt_path, weights_only=True)["global_step"] == 6
    assert weights.step == 6


def test_last_rule_evaluates_the_final_weights(tmp_path):
    from ctvoco.training.oof import evaluation_weights

    trainer, rule, fixed = _fit(tmp_path, "last", max_epochs=3)
    weights = evaluation_weights(rule, trainer, fixed)
    assert weights.ckpt_path is None  # the weights in memory: the final ones
    assert weights.checkpoint == str(tmp_path / "checkpoints/last.ckpt")
    assert weights.step == 9 and weights.selected_on_fold is False
    # the best checkpoint (the first validation: WorseningModel gets worse) is not used
    trainer, rule, fixed = _fit(tmp_path / "es", "last", early_stopping=True, max_epochs=3)
    assert evaluation_weights(rule, trainer, fixed).selected_on_fold is True


def test_best_rule_is_the_selected_checkpoint_and_flagged(tmp_path):
    from ctvoco.training.oof import evaluation_weights

    trainer, rule, fixed = _fit(tmp_path, "best", max_epochs=3)
    weights = evaluation_weights(rule, trainer, fixed)
    assert Path(weights.ckpt_path).name == "best-step=3.ckpt"
    assert weights.selected_on_fold is True


def test_a_fixed_point_training_never_reached_is_a_user_error(tmp_path):
    from ctvoco.training.oof import evaluation_weights

    trainer, rule, fixed = _fit(tmp_path, "step:50", max_epochs=2)
    with pytest.raises(UserError, match=r"oof_from=step:50.*ended at step 6"):
        evaluation_weights(rule, trainer, fixed)


def test_metrics_json_records_the_rule(tmp_path):
    from ctvoco.reports.evaluation import write_evaluation

    write_evaluation(
        _predictions(),
        _labels(),
        tmp_path,
        checkpoint="c.ckpt",
        oof_from="step:4",
        oof_step=4,
        selected_on_fold=False,
    )
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert (record["oof_from"], record["oof_step"], record["selected_on_fold"]) == (
        "step:4",
        4,
        False,
    )


@pytest.mark.slow
def test_finetune_writes_the_oof_of_the_fixed_step(tiny_cohort, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        str(Path(sys.executable).parent / "ctvoco-finetune"),
        f"data.root={tiny_cohort.rsna_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.preprocess.shape=[16,64,64]",
        "data.num_workers=0",
        "model.module.backbone=test_efficientnet",
        "model.module.hidden=8",
        "model.views.num_slices=4",
        "model.views.crop=32",
        "trainer=cpu",
        "trainer.max_epochs=2",
        "logger=csv",
        "oof_from=step:2",
        f"paths.output_dir={run_dir}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["oof_from"] == "step:2" and record["oof_step"] == 2
    assert record["selected_on_fold"] is False
    assert record["checkpoint"].endswith("oof-step0000002.ckpt")
    assert len(pd.read_csv(run_dir / "oof.csv")) > 0
