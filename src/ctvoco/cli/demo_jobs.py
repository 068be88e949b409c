"""Run the installed training programs from a Python program, as a user would.

Shared by ``ctvoco-demo`` and the benchmark studies: each stage's command is printed and
run with its output streaming (:func:`run_stage`), or several training runs go side by side
in the background, each with a share of the cores and a log file (:func:`run_side_by_side`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


def program(name: str) -> str:
    """The installed console script ``name`` next to this interpreter (or on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def resume_override(run_dir: Path) -> list[str]:
    """``["ckpt_path=last"]`` when an interrupted run left checkpoints in ``run_dir``."""
    folder = run_dir / "checkpoints"
    found = (folder / "last.ckpt").is_file() or (folder / "latest-step.ckpt").is_file()
    return ["ckpt_path=last"] if found else []


def add_override_option(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable): Hydra overrides collected in ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a Hydra override for both training programs (repeatable), e.g. {example}",
    )


def stamp(started: float) -> str:
    """``[  123 s]``: the seconds since ``started`` (a ``time.perf_counter()`` value)."""
    return f"[{time.perf_counter() - started:6.0f} s]"


def run_stage(title: str, command: list[str], started: float) -> None:
    """Print the command, run it with its output streaming, stop the demo if it fails."""
    print(f"\n=== {stamp(started)} {title}\n$ {' '.join(command)}", flush=True)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"ctvoco-demo: the stage '{title}' failed (exit {result.returncode}); see above. "
            "Run the same command again to continue from where it stopped."
        )


@dataclass(frozen=True)
class Job:
    """One training program run in the background, its output going to ``log``."""

    name: str
    command: tuple[str, ...]
    run_dir: Path
    log: Path


def job_status(job: Job) -> str:
    """Where a running job is, from its run directory: ``epoch 12/50, val score 0.7610``."""
    import yaml

    try:
        config = yaml.safe_load((job.run_dir / "config.yaml").read_text()) or {}
        history = pd.read_csv(job.run_dir / "metrics.csv")
    except (OSError, ValueError, yaml.YAMLError):
        return "starting"
    if history.empty:
        return "starting"
    trainer = config.get("trainer") or {}
    max_steps, max_epochs = trainer.get("max_steps", -1), trainer.get("max_epochs")
    if isinstance(max_steps, int) and max_steps > 0:
        where = f"step {int(history['step'].max())}/{max_steps}"
    else:
        where = f"epoch {int(history['epoch'].max()) + 1}/{max_epochs}"
    scores = history["val/score"].dropna() if "val/score" in history else pd.Series(dtype=float)
    return where + (f", val score {scores.iloc[-1]:.4f}" if len(scores) else "")


def run_side_by_side(
    jobs: Sequence[Job], started: float, at_once: int = 2, report_every: float = 30.0
) -> list[tuple[Job, int]]:
    """Run ``jobs``, ``at_once`` at a time, each with ``cores / at_once`` threads.

    Small models use two cores poorly, so two runs side by side finish sooner than one
    after the other. A line says when each job starts (with its command and log) and ends,
    and every ``report_every`` seconds (0: never) one line gives each running job's
    :func:`job_status`. Interrupting (Ctrl-C) or terminating (SIGTERM) the caller stops
    every job, so none keeps writing into a run folder that a re-run resumes. Returns the
    failed jobs and their exit codes.
    """
    threads = max(1, (os.cpu_count() or 1) // max(1, at_once))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    pending, running, failed = list(jobs), {}, []
    last_report = time.perf_counter()
    main_thread = threading.current_thread() is threading.main_thread()  # signals need it
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    try:
        while pending or running:
            while pending and len(running) < at_once:
                job = pending.pop(0)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                handle = open(job.log, "w")  # noqa: SIM115 - closed when the job ends
                print(f"{stamp(started)} start  {job.name}  (log: {job.log})", flush=True)
                print(f"$ {' '.join(job.command)}", flush=True)
                process = subprocess.Popen(
                    job.command, stdout=handle, stderr=subprocess.STDOUT, env=env
                )
                running[job] = (process, handle)
            time.sleep(0.5)
            for job, (process, handle) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                handle.close()
                del running[job]
                print(f"{stamp(started)} end    {job.name}  (exit {code})", flush=True)
                if code != 0:
                    failed.append((job, code))
            now = time.perf_counter()
            if report_every > 0 and running and now - last_report >= report_every:
                status = " | ".join(f"{job.name}: {job_status(job)}" for job in running)
                print(f"{stamp(started)} {status}", flush=True)
                last_report = now
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        for process, handle in running.values():
            process.terminate()
            process.wait()
            handle.close()
    return failed


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into ``SystemExit`` so that :func:`run_side_by_side` ends its jobs."""
    raise SystemExit(
        "terminated (SIGTERM): the running jobs were stopped; run the same command again to "
        "continue from their last checkpoints"
    )


def failure_message(program: str, failed: Sequence[tuple[Job, int]]) -> str:
    """The error for failed jobs: each log's last lines, then where the logs are."""
    parts = []
    for job, code in failed:
        lines = job.log.read_text(errors="replace").splitlines()[-15:] if job.log.exists() else []
        parts.append(f"--- {job.log} (exit {code}), last lines:\n" + "\n".join(lines))
    logs = ", ".join(str(job.log) for job, _ in failed)
    return (
        "\n".join(parts)
        + f"\n{program}: {len(failed)} run(s) failed, see {logs}; "
        + "run the same command again to continue"
    )


def skip(title: str, started: float) -> None:
    """Say that the stage ``title`` finished in an earlier run and is reused."""
    print(f"\n=== {stamp(started)} {title}: done before, reused", flush=True)
