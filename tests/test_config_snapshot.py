"""Every program composes each experiment exactly as the snapshot in tests/snapshots records.

The snapshot holds the unresolved configs (everything outside ``model``) of every program
with every experiment and data option. Refreshing it (``python tests/test_config_snapshot.py``)
is for a change that means to alter a composed config; a change that only reorganises the
config files must leave it as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import ctvoco.conf
import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import OmegaConf

CONF = Path(ctvoco.conf.__file__).parent
SNAPSHOT = Path(__file__).parent / "snapshots" / "composed_configs.yaml"
PROGRAM_OVERRIDES = {
    "pretrain": [],
    "finetune": [],
    "preprocess": [],
    "synth": [],
    "predict": ["checkpoint=a.ckpt", "input=images"],
    "segment": [],
}
SEGMENT_EXPERIMENTS = ("demo_seg", "rsna_seg")
TRAINING_PROGRAMS = ("pretrain", "finetune")
EXTRA_OVERRIDES = {"rsna_voco": ["pretrained=/tmp/backbone.pt"]}
"""What an experiment needs besides ``+experiment=`` to compose."""


def _options(group: str) -> list[str]:
    """The config names of a config group, sorted."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compositions() -> dict[str, list[str]]:
    """Each snapshot entry's name (``program/variant``) and its overrides."""
    entries: dict[str, list[str]] = {f"{p}/base": list(o) for p, o in PROGRAM_OVERRIDES.items()}
    for program in (*TRAINING_PROGRAMS, "preprocess"):
        for option in _options("data"):
            entries[f"{program}/data={option}"] = [f"data={option}"]
    for program in TRAINING_PROGRAMS:
        for experiment in _options("experiment"):
            overrides = [f"+experiment={experiment}", *EXTRA_OVERRIDES.get(experiment, [])]
            entries[f"{program}/experiment={experiment}"] = overrides
        for option in _options("debug"):
            entries[f"{program}/debug={option}"] = [f"debug={option}"]
    for experiment in SEGMENT_EXPERIMENTS:
        entries[f"segment/experiment={experiment}"] = [f"+experiment={experiment}"]
    return entries


def composed(program: str, overrides: list[str], strict: bool = False) -> dict[str, Any] | None:
    """The unresolved config outside ``model``.

    Args:
        program: The top-level config.
        overrides: The command line's overrides.
        strict: Raise a composition error instead of returning ``None`` for it.
    """
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        try:
            cfg = compose(config_name=program, overrides=overrides)
        except HydraException:
            if strict:
                raise
            return None
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    container.pop("model", None)
    return container


def snapshot_all() -> dict[str, Any]:
    """Every entry of :func:`compositions`, composed."""
    return {
        name: composed(name.split("/")[0], overrides) for name, overrides in compositions().items()
    }


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    return yaml.safe_load(SNAPSHOT.read_text())


def test_the_snapshot_covers_every_composition(snapshot: dict[str, Any]) -> None:
    assert set(snapshot) == set(compositions())


@pytest.mark.parametrize("name", sorted(compositions()))
def test_composition_matches_the_snapshot(name: str, snapshot: dict[str, Any]) -> None:
    program = name.split("/")[0]
    expected = snapshot[name]
    got = composed(program, compositions()[name], strict=expected is not None)
    assert got == expected
    # The same keys in the same order: the run directory's config.yaml reads the same too.
    assert json.dumps(got) == json.dumps(expected)


if __name__ == "__main__":
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(yaml.safe_dump(snapshot_all(), sort_keys=False, width=100))
    sys.exit(0)
