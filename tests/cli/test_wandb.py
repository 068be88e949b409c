"""The default logger (wandb) in the training programs: loader workers forked after the run
started, the whole resolved config in the run's config, no login notice when the mode is
chosen explicitly."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import ctvoco.cli.components as components
from ctvoco.cli.components import build_loggers
from tests.training.test_resume import BIN, PROGRAMS, SHAPE

FOLD, SEED, BATCH = 1, 5, 2


def config(tmp_path: Path, *overrides: str):
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(
            config_name="finetune", overrides=[f"paths.output_dir={tmp_path}", *overrides]
        )


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    """No API key, no ~/.netrc, no WANDB_MODE; a fresh record of notices."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(components, "_offline_notices", set())


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_explicit_mode_gives_no_login_notice(no_wandb_login, mode, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", mode)
    with caplog.at_level(logging.DEBUG):
        [logger] = build_loggers(config(tmp_path, "logger=wandb"))
    assert logger._offline is (mode == "offline")
    said = [r.getMessage() for r in caplog.records if "login" in r.getMessage().lower()]
    assert said == []


def test_wandb_config_is_the_whole_resolved_config(no_wandb_login, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = config(tmp_path, "logger=wandb", f"data.fold={FOLD}", f"seed={SEED}")
    [logger] = build_loggers(cfg)
    sent = logger._wandb_init["config"]
    assert sent["data"]["fold"] == FOLD and sent["seed"] == SEED
    assert sent["trainer"]["max_epochs"] == cfg.trainer.max_epochs
    assert sent["paths"]["output_dir"] == str(tmp_path)  # interpolations resolved


@pytest.fixture(scope="module")
def cache(tiny_rsna_cache) -> Path:
    """A cache built once (so that the runs below only train)."""
    return tiny_rsna_cache


BLOCK, RECORD_HEADER, FILE_HEADER = 32768, 7, 7
"""The layout of a wandb run file (``run-<id>.wandb``): a 7-byte file header, then records
in 32 KiB blocks, each chunk behind a header of CRC (4 bytes), length (2) and type (1)."""


def run_file_records(path: Path) -> list[bytes]:
    """The serialised records of a wandb run file, chunks joined."""
    data = path.read_bytes()
    pos, pending, out = FILE_HEADER, b"", []
    while pos + RECORD_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + RECORD_HEADER])
        pending += data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            out.append(pending)
            pending = b""
    return out


def offline_run_config(run_dir: Path) -> dict:
    """The run config that the run directory's offline wandb run recorded."""
    from wandb.proto import wandb_internal_pb2 as pb

    [path] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    config: dict = {}
    for raw in run_file_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            items = record.run.config.update if kind == "run" else record.config.update
            for item in items:
                config[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
    return config


@pytest.mark.slow
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_offline_wandb_with_loader_workers(program, tiny_cohort, cache, tmp_path) -> None:
    """Forked loader workers import modules lazily; wandb's import hooks must not run there."""
    run_dir = tmp_path / "run"
    args = [
        str(BIN / f"ctvoco-{program}"),
        f"data.root={tiny_cohort.rsna_root}",
        f"data.cache_dir={cache}",
        SHAPE,
        *PROGRAMS[program],
        "logger=wandb",
        "data.num_workers=2",
        f"data.batch_size={BATCH}",
        f"data.fold={FOLD}",
        f"seed={SEED}",
        "trainer.accelerator=cpu",
        "trainer.max_steps=3",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={run_dir}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"WANDB_MODE": "offline", "HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path)}
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ForkedError" not in result.stderr
    login = [line for line in result.stderr.splitlines() if "login" in line.lower()]
    assert login == []

    saved = offline_run_config(run_dir)
    assert saved["data"]["fold"] == FOLD and saved["seed"] == SEED
    assert saved["data"]["batch_size"] == BATCH
    assert saved["trainer"]["max_steps"] == 3
