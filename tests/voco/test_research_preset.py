"""``model=voco_research`` and ``model=voco_research_v1``: every value of the research presets.

The values are those of the research code (commit c456755); docs/research.md explains each.
"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

PRETRAIN_DATA = ("flare", "flare_rsna", "rsna")
PRETRAIN_EXPERIMENTS = ("flare", "flare_rsna", "rsna_pretrain")

RESEARCH_MODULE = {
    "_target_": "ctvoco.voco.VoCoPretrainer",
    "backbone": "efficientnet_b0",
    "in_chans": 1,
    "init": "imagenet",
    "pooling": "flatten",
    "head_hidden": 2048,
    "head_out": 2048,
    "head_norm": "per_slot",
    "teacher_head": "trained",
    "momentum": 0.9,
    "momentum_schedule": "constant",
    "dropout": 0.2,
    "dropout_at": "slice",
    "w_intra": 1.0,
    "w_inter": 1.0,
    "w_reg": 1.0,
    "intra_symmetric": False,
    "inter_pairing": "local",
    "optimizer": {
        "_target_": "torch.optim.AdamW",
        "_partial_": True,
        "lr": 1.0e-4,
        "weight_decay": 0.01,
        "amsgrad": True,
        "foreach": True,
    },
    "scheduler": {
        "_target_": "ctvoco.training.schedules.WarmupCosine",
        "_partial_": True,
        "warmup_steps": 5000,
        "schedule_steps": 250000,
        "min_lr_ratio": 0.0,
    },
    "gradient_clip_val": 0.0,
}
"""The research code's pretraining (the V2 head, batch 4, 3x3 grid)."""

RESEARCH_VIEWS = {
    "_target_": "ctvoco.voco.VoCoViews",
    "grid": 3,
    "crop_size": 64,
    "num_random": 2,
    "num_slices": 32,
    "depth": 64,
    "foreground_threshold": 76,
    "contrast_jitter": 0.0,
    "brightness_jitter": 0.0,
    "noise_std": 0.0,
    "channel": 0,
    # the research code has no geometric augmentation; the preset inherits it off
    "flip_prob": 0.0,
    "rot90_prob": 0.0,
}

V1_CHANGES_MODULE = {
    "backbone": "efficientnetv2_rw_s",
    "dropout": 0.0,
    "w_inter": 0.0,
    "intra_symmetric": True,
}
"""The released downstream checkpoint's pretraining: the V1 head, 4x4 grid, v2s backbone."""

ENGINEERING_KEYS = {"weights_dir", "max_nonfinite", "channels_last", "compile"}
"""Module keys that do not change what is computed (paths, guards, speed)."""


def pretrain_config(overrides: list[str], model: str = "voco_research"):
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(
            config_name="pretrain",
            overrides=[f"model={model}", "paths.output_dir=/tmp/x", *overrides],
        )


def resolved(cfg, key: str) -> dict:
    return OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)


def test_every_value_of_the_research_preset() -> None:
    cfg = pretrain_config([])
    module, views = resolved(cfg, "model.module"), resolved(cfg, "model.views")
    assert {k: module[k] for k in RESEARCH_MODULE} == RESEARCH_MODULE
    assert views == RESEARCH_VIEWS
    unknown = set(module) - set(RESEARCH_MODULE) - ENGINEERING_KEYS
    assert not unknown, f"model.module keys without a research value in this test: {unknown}"
    assert cfg.trainer.precision == "32-true", "precision comes from the trainer config"


def test_every_value_of_the_released_checkpoint_preset() -> None:
    cfg = pretrain_config([], model="voco_research_v1")
    module, views = resolved(cfg, "model.module"), resolved(cfg, "model.views")
    expected = {**RESEARCH_MODULE, **V1_CHANGES_MODULE}
    assert {k: module[k] for k in expected} == expected
    assert views == {**RESEARCH_VIEWS, "grid": 4}


def test_released_checkpoint_experiment_is_rsna_only_batch_1() -> None:
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(
            config_name="pretrain",
            overrides=["+experiment=rsna_pretrain_research_v1", "paths.output_dir=/tmp/x"],
        )
    assert cfg.data._target_ == "ctvoco.data.RSNADataModule"
    assert cfg.data.purpose == "pretrain"
    assert cfg.data.batch_size == 1
    assert list(cfg.data.exclude_folds) == [0]
    assert (cfg.model.module.backbone, cfg.model.module.intra_symmetric) == (
        "efficientnetv2_rw_s",
        True,
    )
    assert (cfg.model.views.grid, cfg.model.module.w_inter) == (4, 0.0)
    assert cfg.trainer.max_steps == 30000
    assert cfg.trainer.precision == "16-mixed"
    assert cfg.trainer.gradient_clip_val is None


def test_research_preset_is_no_longer_called_seed() -> None:
    with pytest.raises(Exception, match="voco_seed"):
        pretrain_config([], model="voco_seed")


@pytest.mark.parametrize("data", PRETRAIN_DATA)
def test_research_batch_of_4_comes_from_every_data_config(data: str) -> None:
    assert pretrain_config([f"data={data}"]).data.batch_size == 4


@pytest.mark.parametrize("experiment", PRETRAIN_EXPERIMENTS)
def test_pretraining_experiments_keep_the_batch_and_take_fp16_on_request(experiment: str) -> None:
    cfg = pretrain_config([f"+experiment={experiment}"])
    assert cfg.model.module.head_norm == "per_slot", "the preset survives the experiment"
    assert cfg.model.module.gradient_clip_val == 0.0, "the preset's no-clipping survives"
    assert cfg.data.batch_size == 4
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.max_steps == 30000
    fp16 = pretrain_config([f"+experiment={experiment}", "trainer.precision=16-mixed"])
    assert fp16.trainer.precision == "16-mixed"
