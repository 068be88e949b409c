"""The Python API's defaults are the shipped config defaults, key by key.

Every argument with a default of the classes the configs instantiate (and every field of the
preprocessing settings) is compared with the composed, resolved config value, so building
an object in Python without an argument means what the command line does without an
override.
"""

from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from ctvoco.classify import InjuryClassifier, SliceStackViews
from ctvoco.data import FLAREDataModule, RSNADataModule
from ctvoco.preprocessing import PreprocessConfig
from ctvoco.training.optim import as_partial
from ctvoco.voco import VoCoPretrainer, VoCoViews

PROGRAM_SUPPLIED = {"views", "val_views", "inference"}
"""Arguments the training programs pass themselves (no config key)."""


@dataclass(frozen=True)
class Case:
    """One config section and the class it configures."""

    top: str
    overrides: tuple[str, ...]
    where: str
    target: type

    def __str__(self) -> str:
        return f"{self.top}{''.join(' ' + o for o in self.overrides)}: {self.where}"


CASES = [
    Case("pretrain", (), "model.module", VoCoPretrainer),
    Case("pretrain", (), "model.views", VoCoViews),
    Case("finetune", (), "model.module", InjuryClassifier),
    Case("finetune", (), "model.views", SliceStackViews),
    Case("pretrain", ("data=flare",), "data", FLAREDataModule),
    Case("finetune", ("data=rsna",), "data", RSNADataModule),
    Case("pretrain", ("data=flare",), "data.preprocess", PreprocessConfig),
    Case("finetune", ("data=rsna",), "data.preprocess", PreprocessConfig),
]


@functools.cache
def composed(top: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    """The resolved config (interpolations such as ``${model.views.grid}`` resolved)."""
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(config_name=top, overrides=[*overrides, "paths.output_dir=/tmp/x"])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def section(case: Case) -> dict[str, Any]:
    node: Any = composed(case.top, case.overrides)
    for part in case.where.split("."):
        node = node[part]
    return {k: v for k, v in node.items() if k != "_target_"}


def parameters(target: type) -> dict[str, inspect.Parameter]:
    """Named ``__init__`` parameters, following ``**kwargs`` up to the base classes."""
    found: dict[str, inspect.Parameter] = {}
    for cls in target.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self":
                found.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return found


def keys(case: Case) -> list[str]:
    """Config keys, and arguments with a default (required ones, e.g. paths, excluded)."""
    params = parameters(case.target)
    with_default = {n for n, p in params.items() if p.default is not p.empty}
    configured = {k for k in section(case) if k not in params or k in with_default}
    return sorted(configured | (with_default - PROGRAM_SUPPLIED))


def plain(value: Any) -> Any:
    """Tuples as lists, recursively (config lists and Python tuples compare equal)."""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


PARTIALS = {"optimizer": "DEFAULT_OPTIMIZER", "scheduler": "DEFAULT_SCHEDULER"}
"""Partial arguments whose ``None`` default means the module's default mapping of that name."""


def comparable(case: Case, key: str, value: Any) -> Any:
    """A value as the class sees it (preprocessing values through their validation).

    An optimiser or schedule partial compares as the class it builds and its settings;
    ``None`` is the module's default partial.
    """
    if key in PARTIALS:
        if value is None:
            value = getattr(sys.modules[case.target.__module__], PARTIALS[key])
        built = as_partial(value, key)
        return built.func, built.keywords
    if case.target is PreprocessConfig:
        return getattr(PreprocessConfig(**{key: value}), key)
    if key == "preprocess":
        return PreprocessConfig.from_mapping(value)
    return plain(value)


PAIRS = [(case, key) for case in CASES for key in keys(case)]


@pytest.mark.parametrize(
    ("case", "key"), PAIRS, ids=[f"{c.target.__name__}.{k}[{c.top}]" for c, k in PAIRS]
)
def test_python_default_equals_the_config_default(case: Case, key: str) -> None:
    config = section(case)
    params = parameters(case.target)
    name = case.target.__name__
    assert key in params, f"{case}.{key} is not an argument of {name}"
    assert key in config, f"{name}({key}={params[key].default!r}) is missing from {case}"
    default, value = params[key].default, config[key]
    assert comparable(case, key, default) == comparable(case, key, value), (
        f"{name}({key}=) defaults to {default!r} but {case}.{key} is {value!r}"
    )
