"""``ctvoco-demo``: the whole pipeline on a synthetic cohort, end to end, on a CPU.

Runs the installed programs one after another, exactly as a user would (each command is
printed), in ``--root`` (default ``./demo``):

1. ``ctvoco-pretrain +experiment=demo_pretrain``: writes the synthetic cohort (RSNA DICOM
   tree with held-out test patients, FLARE NIfTI tree), preprocesses it, and VoCo-pretrains
   on the FLARE volumes and the RSNA training images (labels unused); it prints the
   position-MAE against the trivial one;
2. ``ctvoco-finetune +experiment=demo_finetune`` twice: from the VoCo backbone and from
   scratch, on the labelled training patients;
3. ``ctvoco-predict`` for each: a submission for the held-out test patients;
4. a results table (score, the six losses, AUCs per init) and a report (``report.md`` with
   PNGs: sample slices with true and predicted injuries, pretraining curves, finetuning
   curves, ROC per target).

A stage whose outputs exist is skipped, so re-running continues where it stopped.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
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


def run_stage(title: str, command: list[str], started: float) -> None:
    """Print the command, run it with its output streaming, stop the demo if it fails."""
    print(
        f"\n=== [{time.perf_counter() - started:6.0f} s] {title}\n$ {' '.join(command)}", flush=True
    )
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"ctvoco-demo: the stage '{title}' failed (exit {result.returncode}); see above. "
            "Run the same command again to continue from where it stopped."
        )


def skip(title: str, started: float) -> None:
    print(
        f"\n=== [{time.perf_counter() - started:6.0f} s] {title}: done before, reused", flush=True
    )


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
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for both training programs (repeatable), e.g. trainer.max_epochs=2",
    )
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

    for init in INITS:
        if not paths.finetuned(init):
            backbone_init = (
                f"model.module.init=voco:{export}" if init == "voco" else "model.module.init=random"
            )
            paths.submission(init).unlink(missing_ok=True)  # made from an earlier model
            run_stage(
                f"finetuning the classifier ({'from the VoCo backbone' if init == 'voco' else 'from scratch'})",
                [
                    program("ctvoco-finetune"),
                    "+experiment=demo_finetune",
                    f"synthetic.root={paths.cohort}",
                    backbone_init,
                    f"paths.output_dir={paths.finetune(init)}",
                    *common,
                    *resume_override(paths.finetune(init)),
                ],
                started,
            )
        else:
            skip(f"finetuning ({init})", started)

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
