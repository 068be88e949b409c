"""``ctvoco-cv-report``: the cross-validation report of a folder of fold runs.

What it computes is :mod:`ctvoco.reports.cross_validation` (rendered by
:mod:`ctvoco.reports.cv_markdown`); this module parses the command line, writes the report
files and prints them. The command line is parsed before the computation (pandas,
scikit-learn, matplotlib, the data readers) is imported, so that ``--help`` and usage
errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctvoco.errors import UserError

DESCRIPTION = (
    "Combine the out-of-fold predictions of the fold runs under DIR into one "
    "cross-validation report: cv_report.csv, cv_report.md (score with a bootstrap interval "
    "and the constant-prediction floors, one row per fold, warnings about missing folds) and "
    "the ROC and calibration plots of the pooled predictions."
)


def build_parser() -> argparse.ArgumentParser:
    """The command line (built without importing the computation)."""
    parser = argparse.ArgumentParser(prog="ctvoco-cv-report", description=DESCRIPTION)
    parser.add_argument("directory", help="folder holding the fold runs (searched recursively)")
    parser.add_argument("--labels", help="train.csv (default: from the first run's config)")
    parser.add_argument(
        "--fit-scaling",
        action="store_true",
        help="fit per-target probability factors out-of-fold and write DIR/scaling.json",
    )
    parser.add_argument(
        "--store-in",
        nargs="+",
        metavar="CKPT",
        default=[],
        help="with --fit-scaling: also write the factors into these classifier checkpoints",
    )
    parser.add_argument(
        "--allow-mixed-rules",
        action="store_true",
        help="report folds whose OOF came from different oof_from rules (with a warning)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="patient-bootstrap resamples for the score's 95%% interval (0: none; default 1000)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)"
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; exits with status 2 on a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.store_in and not args.fit_scaling:
        parser.error("--store-in needs --fit-scaling")
    if args.bootstrap < 0:
        parser.error(f"--bootstrap must be 0 or more; got {args.bootstrap}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """``ctvoco-cv-report DIR [--labels train.csv] [--fit-scaling [--store-in CKPT ...]]``."""
    args = parse_args(argv)
    try:
        result = _compute(args)
    except UserError as exc:
        print(f"ctvoco-cv-report: error: {exc}", file=sys.stderr)
        sys.exit(2)
    for warning in result["warnings"]:
        print(f"ctvoco-cv-report: warning: {warning}", file=sys.stderr)
    _write_and_print(args, result)


def _compute(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the report holds, before anything is written.

    Raises:
        UserError: No ``oof.csv``, unreadable runs, mixed rules or fold assignments.
    """
    from ctvoco.data.rsna import read_rsna_labels
    from ctvoco.reports import cross_validation as cv

    files = cv.find_oof_files(args.directory)
    warnings = cv.check_rules(
        {str(f.parent): cv.oof_rule(f.parent) for f in files}, args.allow_mixed_rules
    )
    labels = read_rsna_labels(args.labels or cv.labels_for(files[0].parent))
    report = cv.cross_validation_report(files, labels)
    predictions = cv.pooled_predictions(files)
    pooled = cv.pooled_summary(labels, predictions, args.bootstrap, args.seed)
    runs = [cv.fold_run(f) for f in files]
    warnings = cv.fold_warnings(runs, pooled.patients, pooled.labelled) + warnings
    scaling = cv.fit_scaling_out_of_fold(files, labels) if args.fit_scaling else None
    if scaling is not None:
        _write_scaling(Path(args.directory) / "scaling.json", scaling, files, args.store_in)
    return {
        "files": files,
        "labels": labels,
        "report": report,
        "predictions": predictions,
        "pooled": pooled,
        "warnings": warnings,
        "scaling": scaling,
    }


def _write_and_print(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Write ``cv_report.csv``, the plots and ``cv_report.md``; print the report."""
    from ctvoco.io.atomic import write_csv_atomic, write_text_atomic
    from ctvoco.reports import cross_validation as cv
    from ctvoco.reports import cv_markdown as md

    out = Path(args.directory)
    report, pooled = result["report"], result["pooled"]
    notes = md.rule_lines(report, result["files"])
    plots = md.write_plots(result["labels"], result["predictions"], out)
    write_csv_atomic(out / "cv_report.csv", report, index=False)
    markdown = md.render_markdown(report, pooled, result["warnings"], notes, plots)
    write_text_atomic(out / "cv_report.md", markdown)
    print("\n".join(notes))
    print(md.to_markdown(report))
    print(_score_line(pooled))
    written = [out / "cv_report.csv", out / "cv_report.md", *plots]
    if result["scaling"] is not None:
        print(cv.scaling_summary(result["scaling"]))
        written.append(out / "scaling.json")
        for checkpoint in args.store_in:
            print(f"factors stored in {checkpoint}")
    print(f"written: {', '.join(str(p) for p in written)}")


def _score_line(pooled: Any) -> str:
    """The pooled score, its interval and its floors, in one line for the terminal."""
    interval = (
        ""
        if pooled.interval is None
        else f" (95 % interval {pooled.interval[0]:.4f} to {pooled.interval[1]:.4f})"
    )
    return (
        f"pooled out-of-fold score {pooled.score:.4f}{interval} on {pooled.patients} patients; "
        f"prevalence baseline {pooled.floors['prevalence']:.4f}, best constant "
        f"{pooled.floors['constant']:.4f}"
    )


def _write_scaling(
    path: Path, result: dict[str, Any], oof_files: Sequence[Path], checkpoints: Sequence[str]
) -> None:
    """``scaling.json`` with the all-fold factors, the scores and the folds; and the factors
    into ``checkpoints``.

    Raises:
        UserError: A checkpoint cannot be read or written.
    """
    from ctvoco.classify.scaling import store_in_checkpoint, write_scaling_json
    from ctvoco.errors import DataError
    from ctvoco.reports.cross_validation import oof_rule

    write_scaling_json(
        path,
        result["factors"],
        scores=result["scores"],
        fold_factors=result["fold_factors"],
        fitted_on=[str(f) for f in oof_files],
        oof_from={str(f.parent): oof_rule(f.parent) for f in oof_files},
        aggregate="max",
    )
    for checkpoint in checkpoints:
        try:
            store_in_checkpoint(checkpoint, result["factors"], source=str(path))
        except (DataError, OSError) as exc:
            raise UserError(f"--store-in {checkpoint}: {exc}") from exc


if __name__ == "__main__":
    main()
