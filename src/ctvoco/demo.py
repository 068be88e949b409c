"""``ctvoco-demo``: the whole pipeline on a synthetic cohort, end to end, on a CPU.

Runs the installed programs stage after stage, exactly as a user would (each command is
printed), in ``--root`` (default ``./demo``):

1. ``ctvoco-pretrain +experiment=demo_pretrain``: writes the synthetic cohort (RSNA DICOM
   tree with held-out test patients, FLARE NIfTI tree), preprocesses it, and VoCo-pretrains
   on the FLARE volumes and the RSNA training images (labels unused); it prints the
   position-MAE against the trivial one;
2. ``ctvoco-finetune +experiment=demo_finetune`` twice, side by side with half the cores
   each: from the VoCo backbone and from scratch, on the labelled training patients;
3. ``ctvoco-predict`` for each: a submission for the held-out test patients;
4. a results table (score, the six losses, AUCs per init) and a report (``report.md`` with
   PNGs: sample slices with true and predicted injuries, pretraining curves, finetuning
   curves, ROC per target).

A stage whose outputs exist is skipped, so re-running continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ctvoco.metrics.rsna import rsna_score, target_auc
from ctvoco.schema import SCORE_COLUMNS

INITS = ("voco", "scratch")


@dataclass(frozen=True)
class DemoPaths:
    """Where each stage writes."""

    root: Path

    @property
    def cohort(self) -> Path:
        return self.root / "cohort"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    def finetune(self, init: str) -> Path:
        return self.root / f"finetune_{init}"

    def submission(self, init: str) -> Path:
        return self.root / f"predict_{init}" / "submission.csv"

    @property
    def predict_cache(self) -> Path:
        return self.root / "predict_cache"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def export(self) -> Path | None:
        """The exported backbone: written when pretraining has finished."""
        found = sorted((self.pretrain / "export").glob("*.pt"))
        return found[0] if found else None

    def finetuned(self, init: str) -> bool:
        """Whether finetuning ``init`` has finished (its evaluation is written last)."""
        return (self.finetune(init) / "metrics.json").exists() and self.checkpoint(init) is not None

    def checkpoint(self, init: str) -> Path | None:
        """The checkpoint finetuning selected on its validation fold (``best-*.ckpt``), or
        ``last.ckpt`` when the run never validated."""
        folder = self.finetune(init) / "checkpoints"
        found = [*sorted(folder.glob("best-*.ckpt")), folder / "last.ckpt"]
        return next((path for path in found if path.is_file()), None)


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
    :func:`job_status`. Interrupting stops every job. Returns the failed jobs and their
    exit codes.
    """
    threads = max(1, (os.cpu_count() or 1) // max(1, at_once))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    pending, running, failed = list(jobs), {}, []
    last_report = time.perf_counter()
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
        for process, handle in running.values():
            process.terminate()
            process.wait()
            handle.close()
    return failed


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
    print(f"\n=== {stamp(started)} {title}: done before, reused", flush=True)


def results_table(labels: pd.DataFrame, submissions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Score, the six losses and per-target AUCs of each init (rows) on the test patients."""
    rows = {}
    for init, submission in submissions.items():
        scores = rsna_score(labels, submission)
        aucs = {f"auc_{k}": v for k, v in target_auc(labels, submission).items()}
        rows[init] = {"score": scores["score"], **{k: scores[k] for k in SCORE_COLUMNS}, **aucs}
    return pd.DataFrame(rows).T


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ctvoco-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="demo", help="working folder (default ./demo)")
    parser.add_argument("--fresh", action="store_true", help="delete --root first")
    add_override_option(parser, example="trainer.max_epochs=2")
    args = parser.parse_args(argv)
    paths = DemoPaths(Path(args.root).resolve())
    if args.fresh and paths.root.exists():
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    common = ["logger=csv", "trainer.accelerator=cpu", *args.overrides]

    if paths.export() is None:
        run_stage(
            "VoCo pretraining on the synthetic cohort (FLARE volumes + RSNA training images)",
            [
                program("ctvoco-pretrain"),
                "+experiment=demo_pretrain",
                f"synthetic.root={paths.cohort}",
                f"paths.output_dir={paths.pretrain}",
                *common,
                *resume_override(paths.pretrain),
            ],
            started,
        )
    else:
        skip("VoCo pretraining", started)
    export = paths.export()
    assert export is not None

    jobs = []
    for init in INITS:
        if paths.finetuned(init):
            skip(f"finetuning ({init})", started)
            continue
        backbone_init = (
            f"model.module.init=voco:{export}" if init == "voco" else "model.module.init=random"
        )
        paths.submission(init).unlink(missing_ok=True)  # made from an earlier model
        command = (
            program("ctvoco-finetune"),
            "+experiment=demo_finetune",
            f"synthetic.root={paths.cohort}",
            backbone_init,
            f"paths.output_dir={paths.finetune(init)}",
            "data.num_workers=1",
            "trainer.enable_progress_bar=false",
            *common,
            *resume_override(paths.finetune(init)),
        )
        log = paths.root / f"finetune_{init}.log"
        jobs.append(Job(init, command, paths.finetune(init), log))
    if jobs:
        names = " and ".join("from scratch" if j.name == "scratch" else "from VoCo" for j in jobs)
        print(
            f"\n=== {stamp(started)} finetuning the classifier "
            f"({names}), side by side; progress every 30 s",
            flush=True,
        )
        failed = run_side_by_side(jobs, started, at_once=len(jobs))
        if failed:
            raise SystemExit(failure_message("ctvoco-demo", failed))

    for init in INITS:
        if not paths.submission(init).exists():
            run_stage(
                f"predicting the held-out test patients ({init})",
                [
                    program("ctvoco-predict"),
                    f"checkpoint={paths.checkpoint(init)}",
                    f"input={paths.cohort / 'rsna' / 'test_images'}",
                    f"output={paths.submission(init)}",
                    f"cache_dir={paths.predict_cache}",
                    f"paths.output_dir={paths.submission(init).parent}",
                ],
                started,
            )
        else:
            skip(f"prediction ({init})", started)

    labels = pd.read_csv(paths.cohort / "rsna" / "test_labels.csv")
    submissions = {init: pd.read_csv(paths.submission(init)) for init in INITS}
    table = results_table(labels, submissions)
    from ctvoco.reports.demo import write_demo_report

    report = write_demo_report(paths, labels, submissions, table)
    elapsed = time.perf_counter() - started
    print(
        f"\n=== [{elapsed:6.0f} s] results on {len(labels)} held-out synthetic patients (lower score is better)"
    )
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nreport: {report}\nrun folders: {paths.root}")


if __name__ == "__main__":
    main()
