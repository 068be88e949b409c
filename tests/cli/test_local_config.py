"""The optional `local` group: a user's local/default.yaml on the search path is merged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

BIN = Path(sys.executable).parent
LOCAL = "# @package _global_\nseed: 123\ntrainer:\n  devices: 3\n"


def local_dir(tmp_path: Path) -> Path:
    """A config folder of the user's with ``local/default.yaml``."""
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(LOCAL)
    return tmp_path


def composed(program: str, *overrides: str) -> DictConfig:
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(program, overrides=[*overrides, "paths.output_dir=/tmp/unused"])


@pytest.mark.parametrize("program", ["finetune", "pretrain"])
def test_local_default_on_the_search_path_is_merged(program: str, tmp_path: Path) -> None:
    searchpath = f"hydra.searchpath=[file://{local_dir(tmp_path)}]"
    cfg = composed(program, searchpath)
    assert (cfg.seed, cfg.trainer.devices) == (123, 3)
    # after the experiment's trainer choice; the command line still wins
    cfg = composed(program, searchpath, "+experiment=demo_" + program, "seed=5")
    assert (cfg.seed, cfg.trainer.devices) == (5, 3)


def test_without_a_local_file_nothing_changes(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    assert composed("finetune", searchpath) == composed("finetune")
    assert composed("finetune").seed == 42


def test_finetune_picks_up_local_default_of_the_config_dir(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "ctvoco-finetune"), "--config-dir", str(local_dir(tmp_path)), "--cfg", "job"],
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert (cfg["seed"], cfg["trainer"]["devices"]) == (123, 3)
