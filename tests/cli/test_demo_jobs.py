"""The job runner of the demo and the benchmarks: stages, side-by-side runs, their status."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

from ctvoco.cli.demo_jobs import (
    Job,
    failure_message,
    job_status,
    resume_override,
    run_side_by_side,
)


def test_resume_override_only_when_a_run_left_checkpoints(tmp_path: Path) -> None:
    assert resume_override(tmp_path) == []
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best-epoch001.ckpt").write_bytes(b"x")
    assert resume_override(tmp_path) == []
    (tmp_path / "checkpoints" / "latest-step.ckpt").write_bytes(b"x")
    assert resume_override(tmp_path) == ["ckpt_path=last"]


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


def test_a_terminated_runner_stops_its_jobs(tmp_path: Path) -> None:
    """SIGTERM (a scheduler's kill, ``kill PID``) ends the running jobs too: no orphan keeps
    writing into a run folder that a re-run would resume."""
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    runner = f"""
import sys, time
from pathlib import Path
from ctvoco.cli.demo_jobs import Job, run_side_by_side
code = "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
job = Job("sleeper", (sys.executable, "-c", code), Path({str(tmp_path)!r}), Path({str(tmp_path / "log")!r}))
run_side_by_side([job], time.perf_counter(), at_once=1, report_every=0)
"""
    parent = subprocess.Popen([sys.executable, "-c", runner])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) != 0
    time.sleep(0.5)
    try:
        os.kill(child, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the job outlived its terminated runner"
