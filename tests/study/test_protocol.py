"""``protocol.json``: which runs a study reuses, resumes or restarts, and the leakage check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ctvoco.errors import DataError
from ctvoco.study.protocol import (
    PROTOCOL_FILE,
    check_no_leak,
    patients_digest,
    prepare_run,
    read_protocol,
)
from ctvoco.study.sources import study_folds
from tests.conftest import TINY_SHAPE

PROTOCOL = {"overrides": ["+experiment=demo_finetune", "trainer.max_steps=900"], "seed": 1}
DONE = "study-done.json"


def test_a_new_run_records_its_protocol(tmp_path: Path) -> None:
    assert prepare_run(tmp_path / "run", PROTOCOL, DONE) is False
    assert read_protocol(tmp_path / "run") == PROTOCOL
    assert json.loads((tmp_path / "run" / PROTOCOL_FILE).read_text())["seed"] == 1


def test_a_done_run_of_the_same_protocol_is_reused(tmp_path: Path) -> None:
    prepare_run(tmp_path / "run", PROTOCOL, DONE)
    (tmp_path / "run" / DONE).write_text("{}")
    assert prepare_run(tmp_path / "run", PROTOCOL, DONE) is True


def test_an_interrupted_run_is_kept_to_resume(tmp_path: Path) -> None:
    prepare_run(tmp_path / "run", PROTOCOL, DONE)
    (tmp_path / "run" / "checkpoints").mkdir()
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"state")
    assert prepare_run(tmp_path / "run", PROTOCOL, DONE) is False
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("write_protocol", [True, False])
def test_a_run_of_another_protocol_starts_again(
    tmp_path: Path, write_protocol: bool, capsys
) -> None:
    run = tmp_path / "run"
    if write_protocol:
        prepare_run(run, PROTOCOL, DONE)
    run.mkdir(exist_ok=True)
    (run / DONE).write_text("{}")
    other = {**PROTOCOL, "seed": 2}
    assert prepare_run(run, other, DONE) is False
    assert not (run / DONE).exists()
    assert read_protocol(run) == other
    assert "made under another protocol; starting it again" in capsys.readouterr().out


def test_the_patients_digest_ignores_order_and_type() -> None:
    assert patients_digest([3, 1, 2]) == patients_digest(["2", "3", "1"])
    assert patients_digest([1, 2])["count"] == 2
    assert patients_digest([1, 2]) != patients_digest([1, 3])


def write_pretraining_config(run: Path, rsna_root: Path, cache: Path, exclude: list[int]) -> None:
    run.mkdir(parents=True)
    data = {
        "_target_": "ctvoco.data.RSNADataModule",
        "root": str(rsna_root),
        "cache_dir": str(cache),
        "purpose": "pretrain",
        "exclude_folds": exclude,
        "val_fraction": 0.2,
        "preprocess": {"shape": list(TINY_SHAPE)},
    }
    (run / "config.yaml").write_text(
        yaml.safe_dump({"task_name": "pretrain", "data": {"members": {"rsna": data}}})
    )


def test_a_run_that_saw_evaluated_patients_stops_the_study(
    tiny_cohort, tiny_rsna_cache, tmp_path
) -> None:
    folds = study_folds(tiny_cohort.rsna_root, tiny_rsna_cache)
    evaluated = set(folds.loc[folds["fold"] == 0, "patient_id"].astype(str))
    leaky, clean = tmp_path / "leaky", tmp_path / "clean"
    write_pretraining_config(leaky, tiny_cohort.rsna_root, tiny_rsna_cache, [])
    write_pretraining_config(clean, tiny_cohort.rsna_root, tiny_rsna_cache, [0])
    with pytest.raises(DataError, match=r"leaky trained or validated on \d+ evaluated patient"):
        check_no_leak(leaky, evaluated)
    record = check_no_leak(clean, evaluated)
    assert record["evaluated_seen"] == 0
    assert 0 < record["seen_rsna_patients"]["count"] == len(folds) - len(evaluated)


def test_a_run_without_config_cannot_be_checked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"config.yaml: cannot read the run's config"):
        check_no_leak(tmp_path, {"1"})
