"""Label efficiency: does VoCo pretraining help when few patients are labelled?

On the synthetic cohort of the demo (RSNA-layout DICOM patients: 120 labelled, 40 held
out; 40 FLARE-layout volumes), the classifier of ``+experiment=demo_finetune`` is trained
on a fraction of the labelled training patients (folds 1-4), from scratch and from the
backbone of the demo's VoCo pretraining (``+experiment=demo_pretrain``: the FLARE volumes
and the RSNA training images of folds 1-4, labels unused), for several seeds. Every run
trains for the same number of optimiser steps whatever the fraction (fewer labelled
patients means more epochs over them), is validated every ``--val-every`` steps on the
same fold-0 patients, and the checkpoint with the best validation score is scored with
``rsna_score`` on the held-out patients, which no run (pretraining included) ever saw. A
seed draws the labelled subset, the head initialisation and the data order; both inits of
a seed see the same labelled patients.

::

    python benchmarks/label_efficiency.py                         # 3 fractions x 2 inits x 3 seeds
    python benchmarks/label_efficiency.py --seeds 0 --fractions 0.1 1.0 --steps 300  # a quick look

Two finetuning runs go at a time (``--jobs``), each with half the CPU cores: small models
use two cores poorly, so two runs side by side finish sooner than one after the other.

Writes into ``--root``: the cohort and its caches, the pretraining run, one finetuning run
per configuration (and its log), ``results.csv`` (one row per run), ``summary.csv`` /
``summary.md`` (mean ± std per fraction and init) and ``label_efficiency.png``. Re-running
reuses every finished run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from ctvoco.demo import program, resume_override, run_stage
from ctvoco.metrics.rsna import prevalence_predictions, rsna_score, target_auc
from ctvoco.schema import SCORE_COLUMNS

INITS = ("scratch", "voco")


def finetune_dir(root: Path, fraction: float, init: str, seed: int) -> Path:
    return root / "runs" / f"fraction{fraction:g}_{init}_seed{seed}"


def finished(run_dir: Path, steps: int) -> bool:
    """Whether the run trained all ``steps`` optimiser steps and wrote its evaluation."""
    import torch

    if not (run_dir / "metrics.json").is_file():
        return False
    reached = 0
    for name in ("last.ckpt", "latest-step.ckpt"):
        path = run_dir / "checkpoints" / name
        if path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            reached = max(reached, int(state.get("global_step", 0)))
    return reached >= steps


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint the run selected on its validation patients."""
    found = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    if not found:
        raise SystemExit(f"label_efficiency: {run_dir} has no best-*.ckpt; delete it and re-run")
    return found[-1]


def pretrain(root: Path, args: argparse.Namespace, started: float) -> Path:
    """One VoCo run on every unlabelled volume; returns the exported backbone."""
    out = root / "pretrain"
    exports = sorted((out / "export").glob("*.pt"))
    if not exports:
        run_stage(
            "VoCo pretraining (FLARE volumes + all RSNA training images, labels unused)",
            [
                program("ctvoco-pretrain"),
                "+experiment=demo_pretrain",
                f"synthetic.root={root / 'cohort'}",
                f"paths.output_dir={out}",
                f"trainer.max_epochs={args.pretrain_epochs}",
                "logger=csv",
                "trainer.accelerator=cpu",
                *args.overrides,
                *resume_override(out),
            ],
            started,
        )
        exports = sorted((out / "export").glob("*.pt"))
    return exports[0]


def finetune_command(
    root: Path, fraction: float, init: str, seed: int, export: Path, args: argparse.Namespace
) -> list[str]:
    """The ``ctvoco-finetune`` command of one configuration."""
    out = finetune_dir(root, fraction, init, seed)
    return [
        program("ctvoco-finetune"),
        "+experiment=demo_finetune",
        f"synthetic.root={root / 'cohort'}",
        f"paths.output_dir={out}",
        "data.fold=0",
        f"data.train_fraction={fraction}",
        f"data.num_workers={max(1, 2 // args.jobs)}",
        f"seed={seed}",
        f"model.module.init={'random' if init == 'scratch' else f'voco:{export}'}",
        "trainer.max_epochs=-1",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.val_every}",
        "trainer.check_val_every_n_epoch=null",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "trainer.accelerator=cpu",
        *args.overrides,
        *resume_override(out),
    ]


def finetune_all(
    root: Path, configs: list[tuple[float, str, int]], export: Path, args, started: float
) -> None:
    """Train every configuration whose run is not finished, ``args.jobs`` at a time.

    Each job gets ``cores / jobs`` threads and writes its output to ``<run dir>.log``; a
    line says when it starts and ends. A failed job stops the study (after the running
    ones end) naming its log; finished runs are kept, so a re-run continues.
    """
    todo = [c for c in configs if not finished(finetune_dir(root, *c), args.steps)]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}

    def run(config: tuple[float, str, int]) -> tuple[tuple[float, str, int], int, Path]:
        fraction, init, seed = config
        out = finetune_dir(root, fraction, init, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        log = out.parent / f"{out.name}.log"
        command = finetune_command(root, fraction, init, seed, export, args)
        print(
            f"[{time.perf_counter() - started:6.0f} s] start  {out.name}  (log: {log})", flush=True
        )
        with open(log, "w") as handle:
            code = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env
            ).returncode
        (out / "test_submission.csv").unlink(missing_ok=True)
        print(
            f"[{time.perf_counter() - started:6.0f} s] end    {out.name}  (exit {code})", flush=True
        )
        return config, code, log

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        failed = [(log, code) for _, code, log in pool.map(run, todo) if code != 0]
    if failed:
        raise SystemExit(
            "label_efficiency: finetuning failed, see "
            + ", ".join(f"{log} (exit {code})" for log, code in failed)
            + "; run the same command again to continue"
        )


def evaluate(root: Path, checkpoint: Path, labels: pd.DataFrame) -> dict[str, float]:
    """Score one checkpoint on the held-out patients (predictions cached beside the run)."""
    from ctvoco.classify.predict import predict_submission

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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="label_efficiency", help="working folder")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1800, help="optimiser steps per finetuning")
    parser.add_argument("--jobs", type=int, default=2, help="finetuning runs at a time")
    parser.add_argument(
        "--val-every", type=int, default=150, help="optimiser steps between validations"
    )
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for both training programs (repeatable)",
    )
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
        checkpoint = best_checkpoint(finetune_dir(root, fraction, init, seed))
        rows.append(
            {
                "fraction": fraction,
                "init": init,
                "seed": seed,
                "labelled_patients": max(1, round(fraction * pool)),
                **evaluate(root, checkpoint, labels),
            }
        )
    results = pd.DataFrame(rows)
    results.to_csv(root / "results.csv", index=False)
    baseline = rsna_score(labels, prevalence_predictions(train_labels, labels["patient_id"]))
    summary = summarise(results)
    summary.to_csv(root / "summary.csv", index=False)
    table = markdown(summary, baseline["score"])
    (root / "summary.md").write_text(table + "\n")
    plot(results, baseline["score"], root / "label_efficiency.png")
    paired = results.pivot_table(index=["fraction", "seed"], columns="init", values="score")
    gain = (paired["scratch"] - paired["voco"]).groupby("fraction")
    elapsed = time.perf_counter() - started
    print(f"\n{len(labels)} held-out patients; {len(args.seeds)} seeds; {args.steps} steps per run")
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
