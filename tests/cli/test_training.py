"""``ckpt_path``: a file, or ``last`` (the newest checkpoint of the run directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ctvoco.cli.training import resolve_ckpt_path
from ctvoco.errors import UserError

LAYOUT = [
    "checkpoints/last.ckpt",
    "checkpoints/latest-step.ckpt",
    "checkpoints/periodic/step0000004.ckpt",
    "checkpoints/periodic/step0000008.ckpt",
    "hpc_ckpt_1.ckpt",
    "hpc_ckpt_2.ckpt",
]


def cfg(run_dir: Path, ckpt_path: str | None):
    return OmegaConf.create({"ckpt_path": ckpt_path, "paths": {"output_dir": str(run_dir)}})


def write_checkpoints(run_dir: Path, ages: dict[str, int]) -> None:
    """One file per relative path, written ``age`` seconds ago (larger: older)."""
    for name, age in ages.items():
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"ckpt")
        stamp = 1_700_000_000 - age
        os.utime(path, (stamp, stamp))


@pytest.mark.parametrize("newest", LAYOUT)
def test_last_is_the_newest_checkpoint_of_the_run(newest: str, tmp_path: Path) -> None:
    ages = {name: 100 + 10 * i for i, name in enumerate(LAYOUT)}
    ages[newest] = 1
    write_checkpoints(tmp_path, ages)
    assert resolve_ckpt_path(cfg(tmp_path, "last")) == str(tmp_path / newest)


def test_slurm_requeue_checkpoint_alone_is_found(tmp_path: Path) -> None:
    write_checkpoints(tmp_path, {"hpc_ckpt_3.ckpt": 5})
    assert resolve_ckpt_path(cfg(tmp_path, "last")) == str(tmp_path / "hpc_ckpt_3.ckpt")


def test_best_checkpoints_are_not_resume_points(tmp_path: Path) -> None:
    write_checkpoints(
        tmp_path,
        {"checkpoints/best-epoch003-step0000040.ckpt": 1, "checkpoints/last.ckpt": 50},
    )
    assert resolve_ckpt_path(cfg(tmp_path, "last")) == str(tmp_path / "checkpoints/last.ckpt")


def test_last_without_checkpoints_names_the_run_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"ckpt_path=last: no checkpoint in .*paths\.output_dir="):
        resolve_ckpt_path(cfg(tmp_path, "last"))


def test_explicit_path_and_unset(tmp_path: Path) -> None:
    write_checkpoints(tmp_path, {"mine.ckpt": 1})
    assert resolve_ckpt_path(cfg(tmp_path, str(tmp_path / "mine.ckpt"))) == str(
        tmp_path / "mine.ckpt"
    )
    assert resolve_ckpt_path(cfg(tmp_path, None)) is None
    with pytest.raises(UserError, match="no such checkpoint file"):
        resolve_ckpt_path(cfg(tmp_path, str(tmp_path / "missing.ckpt")))
