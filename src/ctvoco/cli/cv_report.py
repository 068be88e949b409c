"""``ctvoco-cv-report``: the cross-validation report of a folder of fold runs.

What it computes is :mod:`ctvoco.reports.cross_validation`; this module parses the command
line, writes the report files and prints them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctvoco.data.rsna import read_rsna_labels
from ctvoco.errors import UserError
from ctvoco.io.atomic import write_csv_atomic, write_text_atomic
from ctvoco.reports import cross_validation
from ctvoco.reports.cross_validation import (
    check_rules,
    cross_validation_report,
    find_oof_files,
    fit_scaling_out_of_fold,
    labels_for,
    oof_rule,
    rule_lines,
    scaling_summary,
    to_markdown,
)


def main(argv: Sequence[str] | None = None) -> None:
    """``ctvoco-cv-report DIR [--labels train.csv] [--fit-scaling [--store-in CKPT ...]]``."""
    parser = argparse.ArgumentParser(
        prog="ctvoco-cv-report", description=cross_validation.__doc__.split("\n\n")[0]
    )
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
    args = parser.parse_args(argv)
    if args.store_in and not args.fit_scaling:
        parser.error("--store-in needs --fit-scaling")
    out = Path(args.directory)
    try:
        files = find_oof_files(args.directory)
        warnings = check_rules(
            {str(f.parent): oof_rule(f.parent) for f in files}, args.allow_mixed_rules
        )
        labels = read_rsna_labels(args.labels or labels_for(files[0].parent))
        report = cross_validation_report(files, labels)
        scaling = fit_scaling_out_of_fold(files, labels) if args.fit_scaling else None
        if scaling is not None:
            _write_scaling(out / "scaling.json", scaling, files, args.store_in)
    except UserError as exc:
        print(f"ctvoco-cv-report: error: {exc}", file=sys.stderr)
        sys.exit(2)
    for warning in warnings:
        print(f"ctvoco-cv-report: warning: {warning}", file=sys.stderr)
    write_csv_atomic(out / "cv_report.csv", report, index=False)
    write_text_atomic(out / "cv_report.md", to_markdown(report))
    print("\n".join(rule_lines(report, files)))
    print(to_markdown(report))
    written = [out / "cv_report.csv", out / "cv_report.md"]
    if scaling is not None:
        print(scaling_summary(scaling))
        written.append(out / "scaling.json")
        for checkpoint in args.store_in:
            print(f"factors stored in {checkpoint}")
    print(f"written: {', '.join(str(p) for p in written)}")


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
