"""``ctvoco-demo``: stage bookkeeping, the results table, and (slow) the whole demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ctvoco.demo import (
    DemoPaths,
    Job,
    failure_message,
    job_status,
    results_table,
    resume_override,
    run_side_by_side,
)
from ctvoco.metrics.rsna import prevalence_predictions, rsna_score
from ctvoco.schema import PREDICTION_COLUMNS
from tests.data.conftest import label_row

LABELS = pd.DataFrame(
    [label_row(1, liver=2), label_row(2), label_row(3, bowel=1), label_row(4, spleen=1)]
)


def test_resume_override_only_when_a_run_left_checkpoints(tmp_path: Path) -> None:
    assert resume_override(tmp_path) == []
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best-epoch001.ckpt").write_bytes(b"x")
    assert resume_override(tmp_path) == []
    (tmp_path / "checkpoints" / "latest-step.ckpt").write_bytes(b"x")
    assert resume_override(tmp_path) == ["ckpt_path=last"]


def test_finetuning_counts_as_done_only_once_its_evaluation_is_written(tmp_path: Path) -> None:
    paths = DemoPaths(tmp_path)
    (paths.finetune("voco") / "checkpoints").mkdir(parents=True)
    (paths.finetune("voco") / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert not paths.finetuned("voco")
    (paths.finetune("voco") / "metrics.json").write_text("{}")
    assert paths.finetuned("voco")
    assert not paths.finetuned("scratch")


def test_predictions_use_the_checkpoint_selected_on_validation(tmp_path: Path) -> None:
    paths = DemoPaths(tmp_path)
    folder = paths.finetune("voco") / "checkpoints"
    folder.mkdir(parents=True)
    assert paths.checkpoint("voco") is None
    (folder / "last.ckpt").write_bytes(b"x")
    assert paths.checkpoint("voco") == folder / "last.ckpt"  # a run that never validated
    (folder / "best-epoch004-step0000100.ckpt").write_bytes(b"x")
    assert paths.checkpoint("voco") == folder / "best-epoch004-step0000100.ckpt"


def test_results_table_scores_each_init_with_the_competition_metric() -> None:
    columns = list(PREDICTION_COLUMNS)
    perfect = LABELS[["patient_id", *columns]].astype(float)
    perfect[columns] = perfect[columns].clip(0.02, 0.98)
    prevalence = prevalence_predictions(LABELS, LABELS["patient_id"])
    table = results_table(LABELS, {"voco": perfect, "scratch": prevalence})
    assert list(table.index) == ["voco", "scratch"]
    assert table.loc["scratch", "score"] == pytest.approx(rsna_score(LABELS, prevalence)["score"])
    assert table.loc["voco", "score"] < table.loc["scratch", "score"]
    for target in ("bowel", "liver", "spleen", "any_injury"):  # the targets with injuries
        assert table.loc["voco", target] < table.loc["scratch", target]
    assert table.loc["voco", "auc_any_injury"] == 1.0
    assert table.loc["scratch", "auc_liver"] == 0.5


def python_job(tmp_path: Path, name: str, code: str) -> Job:
    """A job running ``code``; its run directory is ``tmp_path/name``."""
    run_dir = tmp_path / name
    run_dir.mkdir()
    return Job(name, (sys.executable, "-c", code), run_dir, tmp_path / f"{name}.log")


RECORD = (
    "import os, sys, time; start = time.time(); time.sleep(1.5); "
    "print(os.environ['OMP_NUM_THREADS'], start, time.time())"
)


def test_jobs_run_at_the_same_time_with_a_share_of_the_cores(tmp_path: Path, capsys) -> None:
    jobs = [python_job(tmp_path, name, RECORD) for name in ("a", "b")]
    assert run_side_by_side(jobs, started=0.0, at_once=2, report_every=0) == []
    (threads_a, start_a, end_a), (threads_b, start_b, end_b) = (
        job.log.read_text().split() for job in jobs
    )
    assert threads_a == threads_b == str(max(1, (os.cpu_count() or 1) // 2))
    assert float(start_b) < float(end_a) and float(start_a) < float(end_b)  # they overlapped
    out = capsys.readouterr().out
    assert out.count("start  ") == 2 and out.count("end    ") == 2
    assert f"(log: {jobs[0].log})" in out and sys.executable in out


def test_one_at_a_time_gets_every_core(tmp_path: Path) -> None:
    jobs = [python_job(tmp_path, name, RECORD) for name in ("a", "b")]
    assert run_side_by_side(jobs, started=0.0, at_once=1, report_every=0) == []
    (threads_a, _, end_a), (_, start_b, _) = (job.log.read_text().split() for job in jobs)
    assert threads_a == str(os.cpu_count() or 1)
    assert float(end_a) <= float(start_b)


def test_failed_jobs_are_returned_with_their_last_lines(tmp_path: Path) -> None:
    good = python_job(tmp_path, "good", "print('fine')")
    bad = python_job(tmp_path, "bad", "print('reading the cache'); raise SystemExit(3)")
    failed = run_side_by_side([good, bad], started=0.0, report_every=0)
    assert failed == [(bad, 3)]
    message = failure_message("ctvoco-demo", failed)
    assert "reading the cache" in message and str(bad.log) in message
    assert message.splitlines()[-1].startswith("ctvoco-demo: 1 run(s) failed")


def test_status_reads_the_run_directory(tmp_path: Path) -> None:
    job = python_job(tmp_path, "voco", "pass")
    assert job_status(job) == "starting"
    (job.run_dir / "config.yaml").write_text("trainer:\n  max_epochs: 50\n  max_steps: -1\n")
    pd.DataFrame(
        {"epoch": [0, 1, 1], "step": [24, 48, 48], "val/score": [None, None, 0.7612]}
    ).to_csv(job.run_dir / "metrics.csv", index=False)
    assert job_status(job) == "epoch 2/50, val score 0.7612"
    (job.run_dir / "config.yaml").write_text("trainer:\n  max_epochs: -1\n  max_steps: 1200\n")
    assert job_status(job) == "step 48/1200, val score 0.7612"


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_a_rerun_reuses_every_stage(tmp_path: Path) -> None:
    small = [
        "--set=synthetic.n_patients=16",
        "--set=synthetic.n_test=4",
        "--set=synthetic.n_flare=4",
        "--set=trainer.max_epochs=1",
        "--set=data.num_workers=0",
    ]
    demo = [sys.executable, "-m", "ctvoco.demo", "--root", str(tmp_path / "demo"), *small]
    first = subprocess.run(demo, capture_output=True, text=True, timeout=1200, check=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "held-out synthetic patients" in first.stdout
    report = tmp_path / "demo" / "report"
    for name in ("report.md", "results.csv", "samples.png", "pretraining.png", "roc.png"):
        assert (report / name).stat().st_size > 0, name
    table = pd.read_csv(report / "results.csv", index_col=0)
    assert list(table.index) == ["voco", "scratch"]
    assert table["score"].between(0, 10).all()

    again = subprocess.run(demo, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("done before, reused") == 5
