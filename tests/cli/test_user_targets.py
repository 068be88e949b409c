"""Configs may instantiate any importable class, of the kind each section needs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.demos.boring_classes import BoringModel

from ctvoco.cli.components import build, build_callbacks, build_trainer, check_targets
from ctvoco.errors import UserError

USER_MODULE = '''
from pytorch_lightning import Callback

FIT_STARTS = []


class CountFits(Callback):
    """Records every fit start."""

    def __init__(self, label: str = "counted") -> None:
        self.label = label

    def on_fit_start(self, trainer, pl_module) -> None:
        FIT_STARTS.append(self.label)


def make_counter(label: str) -> CountFits:
    return CountFits(label)


def make_dict(label: str) -> dict:
    return {"label": label}
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A module of the user's own, importable as ``my_callbacks``."""
    import importlib
    import sys

    (tmp_path / "my_callbacks.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_callbacks", raising=False)
    return importlib.import_module("my_callbacks")


def finetune_config(*overrides: str) -> DictConfig:
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(
            config_name="finetune",
            overrides=[
                "trainer=cpu",
                "logger=none",
                "callbacks=none",
                "trainer.fast_dev_run=1",
                "trainer.enable_progress_bar=false",
                "paths.output_dir=/tmp/unused",
                *overrides,
            ],
        )


def test_a_callback_of_the_users_own_module_is_built_and_runs(user_module) -> None:
    cfg = finetune_config(
        "+callbacks.counter._target_=my_callbacks.CountFits",
        "+callbacks.counter.label=mine",
        "+callbacks.made._target_=my_callbacks.make_counter",
        "+callbacks.made.label=factory",
    )
    check_targets(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(BoringModel())
    assert user_module.FIT_STARTS == ["mine", "factory"]


def test_a_class_that_is_not_a_callback_is_refused_before_it_is_called(tmp_path: Path) -> None:
    cfg = finetune_config("+callbacks.bad._target_=subprocess.Popen", "+callbacks.bad.args=[true]")
    with pytest.raises(UserError) as caught:
        check_targets(cfg)
    message = str(caught.value)
    assert "callbacks.bad._target_='subprocess.Popen'" in message
    assert "Callback" in message


def test_a_factory_that_builds_no_callback_is_refused_naming_what_it_built(user_module) -> None:
    cfg = finetune_config(
        "+callbacks.bad._target_=my_callbacks.make_dict", "+callbacks.bad.label=x"
    )
    check_targets(cfg)  # a function: what it builds is checked once it is called
    with pytest.raises(UserError, match=r"callbacks\.bad built a dict.*not a Lightning Callback"):
        build_callbacks(cfg)


def test_a_wrong_kind_of_data_module_is_refused_naming_the_key() -> None:
    cfg = OmegaConf.create({"data": {"_target_": "collections.OrderedDict"}})
    with pytest.raises(UserError, match=r"data\._target_='collections.OrderedDict' is not a "):
        check_targets(cfg)
    with pytest.raises(UserError, match=r"data\._target_='collections.OrderedDict' is not a "):
        build(cfg, "data")


@pytest.mark.parametrize(
    ("target", "named", "suggested"),
    [
        (
            "pytorch_lightning.callbacks.EarlyStoping",
            "'pytorch_lightning.callbacks.EarlyStoping'",
            "pytorch_lightning.callbacks.EarlyStopping",
        ),
        ("ctvoco.trainig.history.MetricsHistory", "ctvoco.trainig", "ctvoco.training"),
        ("no_such_package_here.Thing", "no_such_package_here", None),
    ],
)
def test_an_unimportable_target_names_the_key_and_the_path(target, named, suggested) -> None:
    cfg = OmegaConf.create({"callbacks": {"stop": {"_target_": target}}})
    with pytest.raises(UserError) as caught:
        check_targets(cfg)
    message = str(caught.value)
    assert f"callbacks.stop._target_={target!r}" in message
    assert named in message
    if suggested is None:
        assert "did you mean" not in message
    else:
        assert f"did you mean '{suggested}" in message


def test_an_error_inside_the_users_module_is_reported_as_such(tmp_path, monkeypatch) -> None:
    (tmp_path / "broken_callbacks.py").write_text("import not_installed_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = OmegaConf.create({"callbacks": {"x": {"_target_": "broken_callbacks.Thing"}}})
    with pytest.raises(
        UserError, match=r"importing broken_callbacks failed.*not_installed_dependency"
    ):
        check_targets(cfg)


TARGET_CASES = [
    ({"_target_": "ctvoco.data.RSNADataModule"}, None),
    ({"_target_": "pytorch_lightning.Trainer"}, None),
    ({"a": {"_target_": "torch.optim.AdamW"}}, None),
    # configs are code the user wrote: a section without a kind takes any importable callable
    ({"a": {"b": {"_target_": "collections.OrderedDict"}}}, None),
    ({"trainer": {"_target_": "collections.OrderedDict"}}, "trainer._target_="),
    ({"logger": {"csv": {"_target_": "pathlib.Path"}}}, "logger.csv._target_="),
    ({"model": {"module": {"_target_": "pathlib.Path"}}}, "model.module._target_="),
    ({"model": {"module": {"optimizer": {"_target_": "pathlib.Path"}}}}, "optimizer._target_="),
]


@pytest.mark.parametrize(("config", "refused"), TARGET_CASES)
def test_targets_are_checked_for_their_kind(config, refused) -> None:
    if refused is None:
        check_targets(OmegaConf.create(config))
    else:
        with pytest.raises(UserError, match=f"{refused}.* is not a"):
            check_targets(OmegaConf.create(config))
