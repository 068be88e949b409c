"""The command-line floor's layout: small modules, public Hydra APIs, its own launcher."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "src" / "ctvoco" / "cli"
FLOOR = ["app.py", "config_types.py", "jobs.py", "run_setup.py", "user_errors.py"]
LAUNCHER = ROOT / "src" / "hydra_plugins" / "ctvoco_launcher" / "process_launcher.py"
MAX_LINES = 500
PROGRAMS = ["pretrain", "finetune", "preprocess", "synth", "predict", "segment"]


def _floor_files() -> list[Path]:
    """The entry-point modules and the launcher (a missing one fails the test reading it)."""
    return [*(CLI / name for name in FLOOR), LAUNCHER]


@pytest.mark.parametrize("path", _floor_files(), ids=lambda p: p.name)
def test_floor_module_is_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, f"{path.name} has {lines} lines"


@pytest.mark.parametrize("path", _floor_files(), ids=lambda p: p.name)
def test_floor_module_uses_no_private_hydra_api(path: Path) -> None:
    assert "hydra._internal" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("program", PROGRAMS)
def test_multirun_jobs_go_through_the_process_launcher(program: str) -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(program, return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == (
        "hydra_plugins.ctvoco_launcher.process_launcher.ProcessLauncher"
    )
