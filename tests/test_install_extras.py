"""A feature whose packages live in an extra says which extra to install when they are missing."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins

from ctvoco.cli.app import hydra_app
from ctvoco.cli.components import build_loggers


def _task_must_not_run(cfg) -> None:
    raise AssertionError("the task ran although its config could not be composed")


def _run(monkeypatch, tmp_path, config: str, overrides: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ctvoco-test", *overrides])
    hydra_app(config)(_task_must_not_run)()


@pytest.fixture
def without_optuna_sweeper(monkeypatch):
    """The process as it is without hydra-optuna-sweeper: no ``hydra/sweeper/optuna`` config."""
    Plugins.instance()  # discovers the installed plugins (each stores its config) once
    sweepers = ConfigStore.instance().repo["hydra"]["sweeper"]
    if "optuna.yaml" not in sweepers:
        pytest.skip("hydra-optuna-sweeper is not installed here")
    monkeypatch.delitem(sweepers, "optuna.yaml")


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        pytest.param("finetune", ["hparams_search=classifier_optuna"], id="hparams_search"),
        pytest.param("synth", ["hydra/sweeper=optuna"], id="hydra_sweeper"),
    ],
)
def test_optuna_sweep_without_its_plugin_names_the_sweep_extra(
    without_optuna_sweeper, monkeypatch, tmp_path, capsys, config, overrides
) -> None:
    with pytest.raises(SystemExit) as exc:
        _run(monkeypatch, tmp_path, config, overrides)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert "hydra/sweeper=optuna" in err, err
    assert "pip install 'ctvoco[sweep]'" in err, err
    assert "run directory" not in err, err
    assert list(tmp_path.iterdir()) == [], "the failed command left outputs/ behind"


def test_tensorboard_logger_without_tensorboard_names_the_extra(monkeypatch, tmp_path) -> None:
    from hydra import compose, initialize_config_module

    from ctvoco.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a),
    )
    with initialize_config_module("ctvoco.conf", version_base="1.3"):
        cfg = compose("pretrain", [f"paths.output_dir={tmp_path}", "logger=tensorboard"])
    with pytest.raises(UserError, match=r"pip install 'ctvoco\[tensorboard\]'"):
        build_loggers(cfg)
