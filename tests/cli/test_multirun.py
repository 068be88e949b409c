"""A Hydra multirun (``-m``) runs every job in a process of its own, one after another."""

from __future__ import annotations

import json
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


SCORING_PROGRAM = """\
from ctvoco.cli.app import hydra_app


@hydra_app("synth")
def main(cfg):
    # A stand-in for training: the "score" depends on the swept value.
    return {"val/score": (cfg.n_patients - 37) ** 2 / 100.0, "steps": 1}


if __name__ == "__main__":
    main()
"""


def test_optuna_sweep_sees_each_job_result(tmp_path: Path) -> None:
    """Each trial's value comes from its job's child process, not a constant."""
    program = tmp_path / "scoring.py"
    program.write_text(SCORING_PROGRAM)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [
            sys.executable,
            str(program),
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.direction=minimize",
            "hydra.sweeper.sampler.seed=3",
            "+optimized_metric=val/score",
            "n_patients=range(1,100)",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = []
    for job in ("0", "1"):
        returned = json.loads((sweep / job / "result.json").read_text())
        patients = OmegaConf.load(sweep / job / "config.yaml").n_patients
        assert returned == {"val/score": (patients - 37) ** 2 / 100.0, "steps": 1}
        values.append(returned["val/score"])
    assert values[0] != values[1]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == min(values)


DIVERGING_PROGRAM = """\
import math
from pathlib import Path

from ctvoco.cli.app import hydra_app


@hydra_app("synth")
def main(cfg):
    # The first job diverges; the others score their swept value.
    first = Path(cfg.paths.output_dir).name == "0"
    return {"val/score": math.nan if first else float(cfg.n_patients)}


if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("max_failure_rate", [0.0, 1.0])
def test_a_nan_metric_is_a_failed_trial(max_failure_rate: float, tmp_path: Path) -> None:
    """NaN stops the search with one line, unless the sweeper tolerates failed trials."""
    program = tmp_path / "diverging.py"
    program.write_text(DIVERGING_PROGRAM)
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            str(program),
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.max_failure_rate={max_failure_rate}",
            "hydra.sweeper.sampler.seed=3",
            "+optimized_metric=val/score",
            "n_patients=range(1,100)",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if max_failure_rate == 0.0:
        assert result.returncode == 1, result.stderr[-3000:]
        [line] = [x for x in result.stderr.splitlines() if ": error:" in x]
        assert "job 0 returned val/score=nan" in line, line
        assert not (sweep / "1").exists(), "the second job was not started"
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "warning: job 0 returned val/score=nan" in result.stderr
        best = OmegaConf.load(sweep / "optimization_results.yaml")
        assert best.best_value == OmegaConf.load(sweep / "1" / "config.yaml").n_patients


def test_a_missing_optimized_metric_stops_the_sweep_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [
            str(BIN / "ctvoco-synth"),
            "-m",
            f"root={tmp_path}/cohort_${{n_patients}}",
            "n_patients=1,2",
            "n_test=0",
            "n_flare=0",
            "shape=[4,16,16]",
            "+optimized_metric=val/score",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("ctvoco-synth: error:")]
    assert "optimized_metric=val/score" in line and "job 0" in line, line
    assert not (tmp_path / "sweep" / "1").exists(), "the second job was not started"


@pytest.mark.slow
def test_classifier_optuna_search_optimises_the_validation_score(tiny_cohort, tmp_path: Path):
    """``hparams_search=classifier_optuna``: two trials, each scored by its own finetuning."""
    sweep = tmp_path / "sweep"
    run_multirun(
        "ctvoco-finetune",
        "hparams_search=classifier_optuna",
        "hydra.sweeper.n_trials=2",
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
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    scores = [
        json.loads((sweep / job / "result.json").read_text())["val/task_score"] for job in "01"
    ]
    assert scores[0] != scores[1], scores
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == min(scores)
    assert set(best.best_params) == {
        "model.module.optimizer.lr",
        "model.module.optimizer.weight_decay",
        "model.module.dropout",
    }


def test_another_launcher_runs_jobs_in_its_own_way_and_still_scores_them(tmp_path: Path):
    """``hydra/launcher=basic``: the jobs run in the sweep's process, Optuna gets each value."""
    program = tmp_path / "scoring.py"
    program.write_text(SCORING_PROGRAM)
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            str(program),
            "-m",
            "hydra/launcher=basic",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.direction=minimize",
            "hydra.sweeper.sampler.seed=3",
            "+optimized_metric=val/score",
            "n_patients=range(1,100)",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pids = {int(pid) for _, pid in RUN_DIR_LINE.findall(result.stderr + result.stdout)}
    assert len(pids) == 1, "both jobs ran in the sweep's own process"
    values = [
        (OmegaConf.load(sweep / job / "config.yaml").n_patients - 37) ** 2 / 100.0 for job in "01"
    ]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == min(values)
