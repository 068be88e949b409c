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
import shutil
import time
from pathlib import Path

import pandas as pd

from ctvoco.cli.demo_jobs import (
    Job,
    add_override_option,
    failure_message,
    program,
    resume_override,
    run_side_by_side,
    run_stage,
    skip,
    stamp,
)
from ctvoco.cli.demo_paths import INITS, DemoPaths
from ctvoco.cli.demo_report import write_demo_report
from ctvoco.labels import SCORE_COLUMNS
from ctvoco.metrics.rsna import rsna_score, target_auc


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
    report = write_demo_report(paths, labels, submissions, table)
    elapsed = time.perf_counter() - started
    print(
        f"\n=== [{elapsed:6.0f} s] results on {len(labels)} held-out synthetic patients (lower score is better)"
    )
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nreport: {report}\nrun folders: {paths.root}")


if __name__ == "__main__":
    main()
