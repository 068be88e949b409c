"""``data.auto_preprocess=false`` with a missing cache prints the exact ``ctvoco-preprocess``
command: running it builds the cache the training run then accepts."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from ctvoco.data import RSNADataModule
from ctvoco.errors import UserError

BIN = Path(sys.executable).parent
COMMAND = re.compile(r"; run (ctvoco-preprocess .*) \(or set data\.auto_preprocess=true\)$")


def printed_command(message: str) -> list[str]:
    """The ``ctvoco-preprocess`` command of a missing-cache message, as argv."""
    match = COMMAND.search(message)
    assert match, message
    return shlex.split(match.group(1))


def preprocess_module(overrides: list[str]) -> RSNADataModule:
    """The data module ``ctvoco-preprocess`` would build from ``overrides``."""
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(config_name="preprocess", overrides=overrides)
    return instantiate(cfg.data, views=None, val_views=None)


@pytest.mark.parametrize(
    "preprocess",
    [
        {"shape": [16, 64, 64]},
        {"shape": [8, 32, 48], "windows": [[-100, 300], [0, 80]], "margin": 2, "body_crop": False},
        {"scaling": "per_slice_minmax", "body_threshold": 12.5, "min_body_fraction": 0.05},
    ],
)
def test_the_printed_command_builds_the_same_variant(tiny_cohort, tmp_path, preprocess) -> None:
    cache_dir = tmp_path / "my cache, with [odd] chars"
    dm = RSNADataModule(
        root=str(tiny_cohort.rsna_root),
        cache_dir=str(cache_dir),
        preprocess=preprocess,
        auto_preprocess=False,
        views=None,
        val_views=None,
    )
    with pytest.raises(UserError) as info:
        dm.prepare_data()
    argv = printed_command(str(info.value))
    assert argv[0] == "ctvoco-preprocess"
    rebuilt = preprocess_module(argv[1:])
    assert rebuilt.preprocess == dm.preprocess
    assert rebuilt.preprocess.fingerprint() == dm.preprocess.fingerprint()
    assert rebuilt.cache.root == dm.cache.root
    assert rebuilt.root == dm.root
    assert rebuilt.split == dm.split


def test_the_printed_command_keeps_the_split(tiny_cohort, tmp_path) -> None:
    dm = RSNADataModule(
        root=str(tiny_cohort.rsna_root),
        cache_dir=str(tmp_path / "cache"),
        split="test",
        purpose="pretrain",
        auto_preprocess=False,
        views=None,
        val_views=None,
    )
    with pytest.raises(UserError) as info:
        dm.prepare_data()
    argv = printed_command(str(info.value))
    assert "data.split=test" in argv
    assert preprocess_module(argv[1:]).split == "test"


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_running_the_printed_command_lets_finetuning_start(tiny_cohort, tmp_path) -> None:
    finetune = [
        "ctvoco-finetune",
        f"data.root={tiny_cohort.rsna_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.preprocess.shape=[16,64,64]",
        "data.preprocess.margin=2",
        "data.auto_preprocess=false",
        "data.num_workers=0",
        "data.fold=null",
        "model.module.backbone=test_efficientnet",
        "model.module.hidden=8",
        "model.views.num_slices=4",
        "model.views.crop=48",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks=none",
    ]
    first = run(*finetune, f"paths.output_dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 2, first.stderr[-3000:]
    [line] = first.stderr.strip().splitlines()
    argv = printed_command(line)
    built = run(*argv, f"paths.output_dir={tmp_path / 'pre'}", cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    second = run(*finetune, f"paths.output_dir={tmp_path / 'second'}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "lacks" not in second.stderr
