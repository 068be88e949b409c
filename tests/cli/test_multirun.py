"""A Hydra multirun (``-m``) runs every job in a process of its own, one after another."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

BIN = Path(sys.executable).parent
RUN_DIR_LINE = re.compile(r"run directory (\S+) \(process (\d+)\)")


def run_multirun(script: str, *args: str, cwd: Path) -> tuple[int, str]:
    """Run ``script -m ARGS``; returns the sweep process's id and its stdout."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    process = subprocess.Popen(
        [str(BIN / script), "-m", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    return process.pid, stdout


def job_process(run_dir: Path, log_name: str) -> int:
    """The process id that the job's own run logged for ``run_dir``."""
    [(logged_dir, pid)] = RUN_DIR_LINE.findall((run_dir / log_name).read_text())
    assert Path(logged_dir) == run_dir.resolve()
    return int(pid)


def test_synth_multirun_runs_each_job_in_its_own_process(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    parent, _ = run_multirun(
        "ctvoco-synth",
        f"root={tmp_path}/cohort_${{n_patients}}",
        "n_patients=1,2",
        "n_test=0",
        "n_flare=0",
        "shape=[4,16,16]",
        # Resolved in each process: the job's own run names its log after its own mode.
        "hydra.job_logging.handlers.file.filename=${hydra:runtime.output_dir}/${hydra:mode}.log",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    pids = {job: job_process(sweep / job, "RunMode.RUN.log") for job in ("0", "1")}
    assert len(set(pids.values())) == 2 and parent not in pids.values()
    for job, patients in (("0", 1), ("1", 2)):
        config = OmegaConf.load(sweep / job / "config.yaml")
        assert config.n_patients == patients
        assert config.paths.output_dir == str((sweep / job).resolve())
        assert (tmp_path / f"cohort_{patients}" / "rsna" / "train.csv").is_file()


@pytest.mark.slow
def test_finetune_multirun_runs_each_fold_in_its_own_process(tiny_cohort, tmp_path: Path):
    """Two folds, each a complete run directory written by a process of its own."""
    sweep = tmp_path / "sweep"
    parent, _ = run_multirun(
        "ctvoco-finetune",
        f"data.root={tiny_cohort.rsna_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.preprocess.shape=[16,64,64]",
        "data.num_workers=0",
        "model.module.backbone=test_efficientnet",
        "model.module.hidden=8",
        "model.views.num_slices=4",
        "model.views.crop=32",
        "trainer.accelerator=cpu",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "data.fold=0,1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    pids = {}
    for job in ("0", "1"):
        run_dir = sweep / job
        pids[job] = job_process(run_dir, "finetune.log")
        config = OmegaConf.load(run_dir / "config.yaml")
        assert config.data.fold == int(job)
        assert config.paths.output_dir == str(run_dir.resolve())
        for name in ("oof.csv", "metrics.json", "metrics.csv", ".hydra/overrides.yaml"):
            assert (run_dir / name).is_file(), f"{job}/{name} missing"
        assert f"data.fold={job}" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert pids["0"] != pids["1"], "both jobs ran in the same process"
    assert parent not in pids.values(), "a job ran in the sweep's own process"
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]


def test_a_failed_job_stops_the_sweep_with_its_exit_status(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [
            str(BIN / "ctvoco-synth"),
            "-m",
            f"root={blocker}/cohort_${{n_patients}}",
            "n_patients=1,2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [
        line for line in result.stderr.splitlines() if line.startswith("ctvoco-synth: error:")
    ]
    assert len(errors) == 1 and "root=" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep" / "1").exists(), "the second job was not started"
