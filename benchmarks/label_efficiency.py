"""Label efficiency: does VoCo pretraining help when few patients are labelled?

On the synthetic cohort of the demo (RSNA-layout DICOM patients: 120 labelled, 40 held
out; 40 FLARE-layout volumes), the classifier of ``+experiment=demo_finetune`` is trained
on a fraction of the labelled training patients (folds 1-4), from scratch and from the
backbone of the demo's VoCo pretraining (``+experiment=demo_pretrain``: the FLARE volumes
and the RSNA training images of folds 1-4, labels unused), for several seeds. Every run
trains for the same number of optimiser steps whatever the fraction (fewer labelled
patients means more epochs over them) at most, is validated every ``--val-every`` steps
on the same fold-0 patients and stops early after ``--patience`` validations without
improvement, and the checkpoint with the best validation score is scored with
``rsna_score`` on the held-out patients, which no run (pretraining included) ever saw. A
seed draws the labelled subset, the head initialisation and the data order; both inits of
a seed see the same labelled patients.

::

    python benchmarks/label_efficiency.py                         # 3 fractions x 2 inits x 3 seeds
    python benchmarks/label_efficiency.py --seeds 0 --fractions 0.1 1.0 --steps 300  # a quick look

Two finetuning runs go at a time (``--jobs``), each with half the CPU cores: small models
use two cores poorly, so two runs side by side finish sooner than one after the other.
Every two minutes a line gives each running job's step and validation score.

Writes into ``--root``: the cohort and its caches, the pretraining run, one finetuning run
per configuration (and its log), ``results.csv`` (one row per run), ``summary.csv`` /
``summary.md`` (mean ± std per fraction and init) and ``label_efficiency.png``. Re-running
reuses every finished run made with the same settings (each run keeps them in
``protocol.json``), continues interrupted ones and starts again those made with others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
)
from ctvoco.io.atomic import write_csv_atomic, write_text_atomic
from ctvoco.labels import SCORE_COLUMNS, prevalence_predictions
from ctvoco.metrics.rsna import rsna_score, target_auc

INITS = ("scratch", "voco")


def finetune_dir(root: Path, fraction: float, init: str, seed: int) -> Path:
    return root / "runs" / f"fraction{fraction:g}_{init}_seed{seed}"


PROTOCOL_FILE = "protocol.json"


def protocol_matches(run_dir: Path, protocol: list[str]) -> bool:
    """Whether ``run_dir`` was started with the overrides ``protocol``."""
    path = run_dir / PROTOCOL_FILE
    return path.is_file() and json.loads(path.read_text()) == protocol


def prepare_run(run_dir: Path, protocol: list[str]) -> bool:
    """Ready ``run_dir`` for the run ``protocol``; returns whether it is already finished.

    A run is finished when it was started with these overrides and wrote its evaluation
    (``metrics.json``, last). One started with others (an earlier study with other steps,
    fractions or settings) is deleted; an interrupted one is left to resume.
    """
    if run_dir.exists() and not protocol_matches(run_dir, protocol):
        print(f"label_efficiency: {run_dir} was made with other settings; starting it again")
        shutil.rmtree(run_dir)
    if (run_dir / "metrics.json").is_file():
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / PROTOCOL_FILE, json.dumps(protocol))
    return False


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint the run selected on its validation patients."""
    found = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    if not found:
        raise SystemExit(f"label_efficiency: {run_dir} has no best-*.ckpt; delete it and re-run")
    return found[-1]


def pretrain_protocol(root: Path, args: argparse.Namespace) -> list[str]:
    """The overrides that define the pretraining run."""
    return [
        "+experiment=demo_pretrain",
        f"synthetic.root={root / 'cohort'}",
        f"paths.output_dir={root / 'pretrain'}",
        f"trainer.max_epochs={args.pretrain_epochs}",
        *args.overrides,
    ]


def pretrain(root: Path, args: argparse.Namespace, started: float) -> Path:
    """One VoCo run on every unlabelled volume; returns the exported backbone."""
    out = root / "pretrain"
    protocol = pretrain_protocol(root, args)
    exports = sorted((out / "export").glob("*.pt"))
    if not (protocol_matches(out, protocol) and exports):
        prepare_run(out, protocol)
        run_stage(
            "VoCo pretraining (FLARE volumes + all RSNA training images, labels unused)",
            [
                program("ctvoco-pretrain"),
                *protocol,
                "logger=csv",
                "trainer.accelerator=cpu",
                *resume_override(out),
            ],
            started,
        )
        exports = sorted((out / "export").glob("*.pt"))
    return exports[0]


def finetune_protocol(
    root: Path, fraction: float, init: str, seed: int, export: Path, args: argparse.Namespace
) -> list[str]:
    """The overrides that define one finetuning run (what it trains on, how long, from what)."""
    out = finetune_dir(root, fraction, init, seed)
    stopping = (
        ["callbacks=[default,early_stopping]", f"callbacks.early_stopping.patience={args.patience}"]
        if args.patience > 0
        else []
    )
    return [
        "+experiment=demo_finetune",
        f"synthetic.root={root / 'cohort'}",
        f"paths.output_dir={out}",
        "data.fold=0",
        f"data.train_fraction={fraction}",
        f"seed={seed}",
        f"model.module.init={'random' if init == 'scratch' else f'voco:{export}'}",
        "trainer.max_epochs=-1",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.val_every}",
        "trainer.check_val_every_n_epoch=null",
        *stopping,
        *args.overrides,
    ]


def finetune_all(
    root: Path, configs: list[tuple[float, str, int]], export: Path, args, started: float
) -> None:
    """Train every configuration whose run is not finished, ``args.jobs`` at a time.

    Each job gets ``cores / jobs`` threads and writes its output to ``<run dir>.log``. A
    failed job stops the study (after the running ones end) naming its log; finished runs
    are kept, so a re-run continues.
    """
    jobs = []
    for config in configs:
        out = finetune_dir(root, *config)
        protocol = finetune_protocol(root, *config, export, args)
        if prepare_run(out, protocol):
            continue
        command = (
            program("ctvoco-finetune"),
            *protocol,
            f"data.num_workers={max(1, 2 // args.jobs)}",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            "trainer.accelerator=cpu",
            *resume_override(out),
        )
        jobs.append(Job(out.name, command, out, out.parent / f"{out.name}.log"))
    failed = run_side_by_side(jobs, started, at_once=args.jobs, report_every=120.0)
    if failed:
        raise SystemExit(failure_message("label_efficiency", failed))


def trained_steps(run_dir: Path) -> int:
    """Optimiser steps the run trained (fewer than ``--steps`` when it stopped early)."""
    import torch

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return int(state["global_step"])


def selected_step(checkpoint: Path) -> int:
    """The step of a ``best-epoch<e>-step<s>.ckpt`` checkpoint."""
    return int(checkpoint.stem.rpartition("step")[2])


def evaluate(root: Path, checkpoint: Path, labels: pd.DataFrame) -> dict[str, float]:
    """Score one checkpoint on the held-out patients (predictions cached beside the run)."""
    from ctvoco.inference import predict_submission

    run_dir = checkpoint.parent.parent
    output = run_dir / "test_submission.csv"
    if not output.exists():
        predict_submission(
            [checkpoint],
            root / "cohort" / "rsna" / "test_images",
            output,
            cache_dir=root / "test_cache",
            device="cpu",
        )
    submission = pd.read_csv(output)
    scores = rsna_score(labels, submission)
    aucs = {f"auc_{k}": v for k, v in target_auc(labels, submission).items()}
    return {"score": scores["score"], **{k: scores[k] for k in SCORE_COLUMNS}, **aucs}


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every metric, per fraction and init."""
    metrics = ["score", *SCORE_COLUMNS]
    grouped = results.groupby(["fraction", "init"])[metrics]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    summary["seeds"] = results.groupby(["fraction", "init"]).size()
    summary["labelled_patients"] = results.groupby(["fraction", "init"])[
        "labelled_patients"
    ].first()
    return summary.reset_index()


def markdown(summary: pd.DataFrame, baseline: float) -> str:
    """The summary as a Markdown table (mean ± std over seeds)."""
    metrics = ["score", *SCORE_COLUMNS]
    lines = [
        "| labelled | init | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for _, row in summary.iterrows():
        cells = [f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}" for m in metrics]
        label = f"{row['fraction']:.0%} ({int(row['labelled_patients'])})"
        lines.append(f"| {label} | {row['init']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Prevalence baseline (training-label frequencies for everyone): {baseline:.3f}.")
    return "\n".join(lines)


def plot(results: pd.DataFrame, baseline: float, path: Path) -> None:
    """Score (and each loss) against the labelled fraction, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ctvoco.reports.plots import save_figure

    metrics = ["score", *SCORE_COLUMNS]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), sharex=True)
    for ax, metric in zip(axes, metrics, strict=True):
        for init, marker in zip(INITS, ("o", "s"), strict=True):
            part = results[results["init"] == init].groupby("fraction")[metric]
            mean, std = part.mean(), part.std(ddof=1).fillna(0.0)
            ax.errorbar(mean.index * 100, mean, yerr=std, marker=marker, capsize=3, label=init)
        if metric == "score":
            ax.axhline(baseline, ls=":", color="gray", label="prevalence")
        ax.set_xscale("log")
        ax.set_xticks(sorted(results["fraction"].unique() * 100))
        ax.set_xticklabels([f"{f:g}%" for f in sorted(results["fraction"].unique() * 100)])
        ax.set_title(metric)
        ax.set_xlabel("labelled patients")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("weighted log loss (lower is better)")
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="label_efficiency", help="working folder")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--steps", type=int, default=1200, help="optimiser steps per finetuning (at most)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="finetuning runs at a time")
    parser.add_argument(
        "--val-every", type=int, default=100, help="optimiser steps between validations"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=5,
        help="validations without improvement before a run stops early (0: train all steps)",
    )
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    add_override_option(parser, example="model.module.backbone=test_resnet")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    export = pretrain(root, args, started)
    labels = pd.read_csv(root / "cohort" / "rsna" / "test_labels.csv")
    train_labels = pd.read_csv(root / "cohort" / "rsna" / "train.csv")
    folds = pd.read_csv(next((root / "cohort" / "cache" / "rsna").glob("folds_*.csv")))
    pool = int((folds["fold"] != 0).sum())  # the training patients; fold 0 validates
    configs = [(f, i, s) for s in args.seeds for f in args.fractions for i in INITS]
    finetune_all(root, configs, export, args, started)
    rows = []
    for fraction, init, seed in configs:
        run_dir = finetune_dir(root, fraction, init, seed)
        checkpoint = best_checkpoint(run_dir)
        rows.append(
            {
                "fraction": fraction,
                "init": init,
                "seed": seed,
                "labelled_patients": max(1, round(fraction * pool)),
                "steps_trained": trained_steps(run_dir),
                "selected_step": selected_step(checkpoint),
                **evaluate(root, checkpoint, labels),
            }
        )
    results = pd.DataFrame(rows)
    write_csv_atomic(root / "results.csv", results, index=False)
    baseline = rsna_score(labels, prevalence_predictions(train_labels, labels["patient_id"]))
    summary = summarise(results)
    write_csv_atomic(root / "summary.csv", summary, index=False)
    table = markdown(summary, baseline["score"])
    write_text_atomic(root / "summary.md", table + "\n")
    plot(results, baseline["score"], root / "label_efficiency.png")
    paired = results.pivot_table(index=["fraction", "seed"], columns="init", values="score")
    gain = (paired["scratch"] - paired["voco"]).groupby("fraction")
    elapsed = time.perf_counter() - started
    print(
        f"\n{len(labels)} held-out patients; {len(args.seeds)} seeds; at most {args.steps} steps "
        f"per run, early stop after {args.patience} validations without improvement"
        if args.patience
        else f"\n{len(labels)} held-out patients; {len(args.seeds)} seeds; {args.steps} steps per run"
    )
    steps = results.groupby(["fraction", "init"])[["steps_trained", "selected_step"]].mean()
    print("\nmean steps trained and step of the selected checkpoint:")
    print(steps.round(0).astype(int).to_string())
    print(table)
    print(
        "\nscore gain of VoCo over scratch (scratch - voco, paired by seed; > 0 means VoCo helps):"
    )
    for fraction, values in gain:
        v = values.to_numpy()
        print(
            f"  {fraction:.0%}: {v.mean():+.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f} "
            f"({int((v > 0).sum())}/{len(v)} seeds)"
        )
    print(
        f"\nwall time {elapsed / 60:.1f} min on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; results in {root}"
    )


if __name__ == "__main__":
    main()
