"""Combine the out-of-fold predictions of several fold runs into one cross-validation report.

``ctvoco-cv-report DIR`` finds every ``oof.csv`` under ``DIR`` (e.g. the multirun folder of
``ctvoco-finetune -m +experiment=rsna data.fold=0,1,2,3,4``), scores each fold, and writes
``cv_report.csv`` (one row per fold, then mean, std and the pooled out-of-fold score) and
``cv_report.md`` next to them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from ctvoco.data.rsna import read_rsna_labels
from ctvoco.errors import UserError
from ctvoco.io.atomic import write_csv_atomic, write_text_atomic
from ctvoco.metrics.rsna import rsna_score, target_auc
from ctvoco.schema import SCORE_COLUMNS


def find_oof_files(directory: str | Path) -> list[Path]:
    """Every ``oof.csv`` under ``directory``, sorted."""
    files = sorted(Path(directory).rglob("oof.csv"))
    if not files:
        raise UserError(f"no oof.csv under {directory}; run ctvoco-finetune for each fold first")
    return files


def labels_for(run_dir: Path) -> Path:
    """The labels CSV a fold run used (from its ``config.yaml``)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = config["data"]
    return Path(data.get("labels_csv") or Path(data["root"]) / "train.csv")


def cross_validation_report(oof_files: Sequence[Path], labels: pd.DataFrame) -> pd.DataFrame:
    """Per-fold metrics, their mean and std, and the pooled out-of-fold metrics.

    Args:
        oof_files: One ``oof.csv`` per fold (submission columns + ``series_id``).
        labels: Validated ``train.csv`` frame.

    Returns:
        Rows ``fold <name>`` ..., ``mean``, ``std``, ``pooled``; columns: the six losses,
        ``score`` and ``auc_<target>``.
    """
    rows, frames = [], []
    for path in oof_files:
        oof = pd.read_csv(path)
        frames.append(oof)
        subset = labels[labels["patient_id"].isin(oof["patient_id"])]
        rows.append({"run": str(path.parent), **_metrics(subset, oof)})
    table = pd.DataFrame(rows)
    numeric = table.drop(columns="run")
    pooled = pd.concat(frames, ignore_index=True)
    owners = pd.concat(
        [f[["patient_id"]].drop_duplicates().assign(fold=i) for i, f in enumerate(frames)]
    )
    shared = owners["patient_id"].duplicated(keep=False)
    if shared.any():
        raise UserError(
            f"{owners.loc[shared, 'patient_id'].nunique()} patients appear in several folds' "
            "oof.csv; were the runs made with different fold assignments?"
        )
    summary = pd.DataFrame(
        [
            {"run": "mean", **numeric.mean().to_dict()},
            {"run": "std", **numeric.std(ddof=1).to_dict()},
            {
                "run": "pooled",
                **_metrics(labels[labels["patient_id"].isin(pooled["patient_id"])], pooled),
            },
        ]
    )
    return pd.concat([table, summary], ignore_index=True)


def _metrics(labels: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    out = rsna_score(labels, predictions)
    out.update({f"auc_{k}": v for k, v in target_auc(labels, predictions).items()})
    return out


def to_markdown(report: pd.DataFrame) -> str:
    """The report as a Markdown table (losses and score, 4 decimals)."""
    columns = ["run", *SCORE_COLUMNS, "score"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in report[columns].iterrows():
        cells = [str(row["run"])] + [f"{row[c]:.4f}" for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """``ctvoco-cv-report DIR [--labels train.csv]``."""
    parser = argparse.ArgumentParser(prog="ctvoco-cv-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="folder holding the fold runs (searched recursively)")
    parser.add_argument("--labels", help="train.csv (default: from the first run's config)")
    args = parser.parse_args(argv)
    try:
        files = find_oof_files(args.directory)
        labels = read_rsna_labels(args.labels or labels_for(files[0].parent))
        report = cross_validation_report(files, labels)
    except UserError as exc:
        print(f"ctvoco-cv-report: error: {exc}", file=sys.stderr)
        sys.exit(2)
    out = Path(args.directory)
    write_csv_atomic(out / "cv_report.csv", report, index=False)
    write_text_atomic(out / "cv_report.md", to_markdown(report))
    print(to_markdown(report))
    print(f"written: {out / 'cv_report.csv'}, {out / 'cv_report.md'}")


if __name__ == "__main__":
    main()
