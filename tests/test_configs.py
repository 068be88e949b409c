"""Every shipped config composes, and experiments only override keys that exist."""

from __future__ import annotations

from pathlib import Path

import ctvoco.conf
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

CONF = Path(ctvoco.conf.__file__).parent
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PRETRAIN_EXPERIMENTS = {
    "flare",
    "rsna_pretrain",
    "flare_rsna",
    "demo_pretrain",
    "rsna_pretrain_research_v1",
}
TOP_CONFIGS = {
    "pretrain": [],
    "finetune": [],
    "preprocess": [],
    "synth": [],
    "predict": ["checkpoint=a.ckpt", "input=images"],
    "segment": [],
}
SEGMENT_EXPERIMENTS = {"rsna_seg", "demo_seg"}


def compose_config(name: str, overrides: list[str]):
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.mark.parametrize("name", sorted(TOP_CONFIGS))
def test_top_configs_compose_and_resolve(name: str) -> None:
    overrides = [*TOP_CONFIGS[name], "paths.output_dir=/tmp/x"]
    cfg = compose_config(name, overrides)
    OmegaConf.to_container(cfg, resolve=True)


def test_every_experiment_is_known() -> None:
    assert set(EXPERIMENTS) == PRETRAIN_EXPERIMENTS | SEGMENT_EXPERIMENTS | {
        "rsna",
        "rsna_voco",
        "demo_finetune",
    }


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment: str) -> None:
    top = "pretrain" if experiment in PRETRAIN_EXPERIMENTS else "finetune"
    if experiment in SEGMENT_EXPERIMENTS:
        top = "segment"
    overrides = [f"+experiment={experiment}", "paths.output_dir=/tmp/x"]
    if experiment == "rsna_voco":
        overrides.append("pretrained=/tmp/backbone.pt")
    cfg = compose_config(top, overrides)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["model"]["module"]["_target_"].startswith("ctvoco.")
    assert container["data"]["_target_"].startswith("ctvoco.data.")


@pytest.mark.parametrize("group", ["trainer", "data", "logger", "callbacks", "debug", "model"])
def test_group_options_compose(group: str) -> None:
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        top = "pretrain" if (group != "model" or option.startswith("voco")) else "finetune"
        if group == "model" and option == "segmenter":
            top = "segment"
        cfg = compose_config(top, [f"{group}={option}", "paths.output_dir=/tmp/x"])
        OmegaConf.to_container(cfg, resolve=True)


def test_trainer_keys_overridden_by_experiments_exist_in_default() -> None:
    default = OmegaConf.load(CONF / "trainer" / "default.yaml")
    for path in (CONF / "experiment").glob("*.yaml"):
        trainer = OmegaConf.load(path).get("trainer") or {}
        unknown = set(trainer) - set(default)
        assert not unknown, (
            f"{path.name} overrides trainer keys missing from default.yaml: {unknown}"
        )


def test_data_modules_use_their_own_sharding() -> None:
    default = OmegaConf.load(CONF / "trainer" / "default.yaml")
    assert default.use_distributed_sampler is False


def test_seed_is_top_level_and_reaches_data() -> None:
    cfg = compose_config("finetune", ["seed=123", "paths.output_dir=/tmp/x"])
    assert cfg.seed == 123
    assert cfg.data.seed == 123


def test_output_dir_override_moves_every_output() -> None:
    cfg = compose_config("pretrain", ["paths.output_dir=/tmp/run7"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["trainer"]["default_root_dir"] == "/tmp/run7"
    assert resolved["callbacks"]["model_checkpoint"]["dirpath"] == "/tmp/run7/checkpoints"
    assert resolved["logger"]["wandb"]["save_dir"] == "/tmp/run7"


def test_voco_research_preset_is_the_research_configuration() -> None:
    cfg = compose_config("pretrain", ["model=voco_research", "paths.output_dir=/tmp/x"])
    module, views = cfg.model.module, cfg.model.views
    assert (module.backbone, module.pooling, module.head_norm, module.teacher_head) == (
        "efficientnet_b0",
        "flatten",
        "per_slot",
        "trained",
    )
    assert (
        module.momentum,
        module.momentum_schedule,
        module.optimizer.lr,
        module.scheduler.warmup_steps,
    ) == (
        0.9,
        "constant",
        1e-4,
        5000,
    )
    assert (views.grid, views.num_random, views.num_slices, views.crop_size) == (3, 2, 32, 64)
    assert cfg.data.batch_size == 4


def test_rsna_experiment_is_the_research_classifier() -> None:
    cfg = compose_config("finetune", ["+experiment=rsna", "paths.output_dir=/tmp/x"])
    assert cfg.model.module.backbone == "efficientnetv2_rw_s"
    assert (cfg.model.views.num_slices, cfg.model.views.crop) == (48, 192)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (4, 20)
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.model.module.task == "all"


STEP_SCHEDULE_KEYS = {
    "trainer": {"max_steps", "val_check_interval"},
    "callbacks.model_checkpoint": {"every_n_train_steps"},
}
"""What a step-based schedule sets (conf/schedule/); an epoch-based demo sets none of it."""


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_step_schedules_come_from_the_schedule_group(experiment: str) -> None:
    config = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml")
    for node, keys in STEP_SCHEDULE_KEYS.items():
        written = set(OmegaConf.select(config, node) or {}) & keys
        assert not written, f"{experiment}.yaml sets {node}.{sorted(written)}: use /schedule"


def test_step_schedule_experiments_select_it() -> None:
    for experiment in PRETRAIN_EXPERIMENTS - {"demo_pretrain"}:
        cfg = compose_config("pretrain", [f"+experiment={experiment}", "paths.output_dir=/x"])
        assert cfg.trainer.max_steps == 30000, experiment
        assert cfg.callbacks.model_checkpoint.every_n_train_steps == 1000, experiment


LOADER_KEYS = {"batch_size", "val_batch_size", "num_workers", "pin_memory", "seed"}
CACHE_KEYS = {"preprocess", "auto_preprocess", "preprocess_workers"}


@pytest.mark.parametrize("source", ["flare", "rsna", "flare_rsna"])
def test_data_configs_share_their_loader_and_cache_defaults(source: str) -> None:
    written = set(OmegaConf.load(CONF / "data" / f"{source}.yaml"))
    assert not written & (LOADER_KEYS | CACHE_KEYS), f"data/{source}.yaml repeats shared keys"
    data = compose_config("pretrain", [f"data={source}", "paths.output_dir=/x"]).data
    assert set(data) >= LOADER_KEYS


def _files_with(text: str, skip: str | None = None) -> list[str]:
    """The config files (outside ``conf/<skip>``) whose text contains ``text``."""
    return sorted(
        str(path.relative_to(CONF))
        for path in CONF.rglob("*.yaml")
        if (skip is None or path.relative_to(CONF).parts[0] != skip)
        and text in path.read_text(encoding="utf-8")
    )


def test_the_demo_cohort_is_written_once() -> None:
    defining = [
        name
        for name in _files_with("n_patients:")
        if OmegaConf.select(OmegaConf.load(CONF / name), "synthetic") is not None
        or name.startswith("synthetic/")
    ]
    assert defining == ["synthetic/demo.yaml"]
    for experiment in ("demo_pretrain", "demo_finetune"):
        top = "pretrain" if experiment in PRETRAIN_EXPERIMENTS else "finetune"
        cfg = compose_config(top, [f"+experiment={experiment}", "paths.output_dir=/x"])
        assert cfg.synthetic.n_patients == 120 and cfg.synthetic.root == "/x/cohort"


def test_no_config_outside_model_names_a_research_seed_preset() -> None:
    assert _files_with("voco_seed", skip="model") == []
