"""``model=voco_seed``: what the preset sets, and what it leaves to the data and trainer configs."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

PRETRAIN_DATA = ("flare", "flare_rsna", "rsna")
PRETRAIN_EXPERIMENTS = ("flare", "flare_rsna", "rsna_pretrain")


def pretrain_config(overrides: list[str]):
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(
            config_name="pretrain",
            overrides=["model=voco_seed", "paths.output_dir=/tmp/x", *overrides],
        )


def test_the_preset_sets_model_keys_only() -> None:
    cfg = pretrain_config([])
    module = cfg.model.module
    assert (module.init, module.pooling, module.head_norm, module.teacher_head) == (
        "imagenet",
        "flatten",
        "seed",
        "seed",
    )
    assert (module.momentum, module.momentum_schedule, module.warmup_steps) == (
        0.9,
        "constant",
        5000,
    )
    assert cfg.trainer.precision == "32-true", "precision comes from the trainer config"


@pytest.mark.parametrize("data", PRETRAIN_DATA)
def test_research_batch_of_4_comes_from_every_data_config(data: str) -> None:
    assert pretrain_config([f"data={data}"]).data.batch_size == 4


@pytest.mark.parametrize("experiment", PRETRAIN_EXPERIMENTS)
def test_pretraining_experiments_keep_the_batch_and_take_fp16_on_request(experiment: str) -> None:
    cfg = pretrain_config([f"+experiment={experiment}"])
    assert cfg.model.module.head_norm == "seed", "the preset survives the experiment"
    assert cfg.data.batch_size == 4
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.max_steps == 30000
    fp16 = pretrain_config([f"+experiment={experiment}", "trainer.precision=16-mixed"])
    assert fp16.trainer.precision == "16-mixed"
