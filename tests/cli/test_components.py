"""Loggers and trainer as the entry points build them: wandb offline without a login (one
notice, on global rank 0), a missing tensorboard, SyncBatchNorm on CPUs."""

from __future__ import annotations

import importlib.util
import logging

import pytest
from hydra import compose, initialize_config_module

import ctvoco.cli.components as components
from ctvoco.cli.components import build_loggers, build_trainer, is_global_rank_zero
from ctvoco.errors import UserError

NOTICE = "wandb: no login found"


def config(tmp_path, *overrides: str):
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(
            config_name="pretrain", overrides=[f"paths.output_dir={tmp_path}", *overrides]
        )


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    """No WANDB_MODE, no API key, no ~/.netrc; a fresh record of notices."""
    for name in (
        "WANDB_MODE",
        "WANDB_API_KEY",
        "NETRC",
        "WANDB_BASE_URL",
        *components.RANK_VARIABLES,
    ):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(components, "_offline_notices", set())


def notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(NOTICE)]


def test_wandb_without_login_runs_offline_with_one_notice(no_wandb_login, tmp_path, caplog):
    cfg = config(tmp_path, "logger=wandb")
    with caplog.at_level(logging.WARNING, logger=components.__name__):
        [logger] = build_loggers(cfg)
        build_loggers(cfg)  # built again in the same run: no second notice
    assert type(logger).__name__ == "WandbLogger" and logger._offline is True
    [line] = notices(caplog)
    assert f"{tmp_path / 'wandb'}" in line and "wandb sync" in line


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"])
def test_wandb_notice_only_on_global_rank_zero(
    no_wandb_login, variable, tmp_path, caplog, monkeypatch
):
    monkeypatch.setenv(variable, "1")
    cfg = config(tmp_path, "logger=wandb")
    with caplog.at_level(logging.WARNING, logger=components.__name__):
        [logger] = build_loggers(cfg)
    assert logger._offline is True, "every rank logs offline"
    assert notices(caplog) == []


def test_wandb_login_means_online_and_no_notice(no_wandb_login, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    with caplog.at_level(logging.WARNING, logger=components.__name__):
        [logger] = build_loggers(config(tmp_path, "logger=wandb"))
    assert logger._offline is False and notices(caplog) == []


RANK_CASES = [
    ({}, True),
    ({"RANK": "0", "LOCAL_RANK": "0"}, True),
    ({"LOCAL_RANK": "1"}, False),
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
    ({"SLURM_PROCID": "3"}, False),
    ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, False),
]


@pytest.mark.parametrize(("env", "zero"), RANK_CASES)
def test_global_rank_zero_from_the_environment(env, zero) -> None:
    assert is_global_rank_zero(env) is zero


def test_tensorboard_missing_is_a_user_error_with_the_install_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a),
    )
    with pytest.raises(UserError, match=r"pip install 'ctvoco\[tensorboard\]'"):
        build_loggers(config(tmp_path, "logger=tensorboard"))


def test_ddp_on_cpu_switches_sync_batchnorm_off(tmp_path, caplog) -> None:
    cfg = config(
        tmp_path,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "logger=none",
        "callbacks=none",
    )
    assert cfg.trainer.sync_batchnorm is True
    with caplog.at_level(logging.INFO, logger=components.__name__):
        trainer = build_trainer(cfg)
    assert trainer._accelerator_connector._layer_sync is None
    lines = [r.getMessage() for r in caplog.records if "sync_batchnorm" in r.getMessage()]
    assert len(lines) == 1 and "switched off" in lines[0]


@pytest.mark.parametrize(
    ("trainer", "off"),
    [
        ({"accelerator": "cpu", "sync_batchnorm": True}, True),
        ({"accelerator": "gpu", "sync_batchnorm": True}, False),
        ({"accelerator": "cpu", "sync_batchnorm": False}, False),
    ],
)
def test_sync_batchnorm_is_only_switched_off_on_cpu(trainer, off) -> None:
    assert components._sync_batchnorm_on_cpu(trainer) is off
