"""``ctvoco-study``: the label-efficiency study, on the phantom or on a user's RSNA copy.

::

    ctvoco-study                                   # the phantom, on a CPU (about an hour)
    ctvoco-study --data rsna --root /data/rsna --flare-root /data/FLARE23 \\
        --pretrained ~/weights/efficientnet_b0.safetensors

Arms ``scratch`` and ``voco`` always run; ``imagenet`` and ``imagenet+voco`` run when the
backbone has local ImageNet weights (``--pretrained`` or the weights folder), and a line
says which weights were missing otherwise. Every finetuning seed trains each arm on the
same labelled patients; the VoCo arms of a seed start from one of the pretraining seeds.
Writes into ``--out``: one folder per run (each with its ``protocol.json`` and log),
``protocol.json`` (the study's), ``results.csv`` (a row per run), ``summary.md`` and the
``scores.csv`` / ``differences.csv`` / ``aucs.csv`` / ``floors.csv`` tables, and
``label_efficiency.png``. Re-running reuses every finished run of the same protocol and
resumes interrupted ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from ctvoco.cli.demo_jobs import add_override_option
from ctvoco.errors import UserError
from ctvoco.io.atomic import write_csv_atomic, write_text_atomic
from ctvoco.study.arms import imagenet_weights, select_arms
from ctvoco.study.design import plan_runs
from ctvoco.study.protocol import patients_digest, write_protocol
from ctvoco.study.report import collect, markdown, plot, summary_tables
from ctvoco.study.runs import (
    PREDICTIONS_FILE,
    SELECTIONS,
    Settings,
    finetune_all,
    finetune_dir,
    pretrain_all,
    read_done,
)
from ctvoco.study.sources import PhantomData, RsnaData, StudyData

PHANTOM_DEFAULTS = {
    "seeds": [0, 1, 2, 3, 4],
    "jobs": 2,
    "pretrain_epochs": 12,
    "steps": 1000,
    "val_every": 100,
}
"""The phantom study's defaults: about an hour on two CPU cores (docs/results.md)."""
RSNA_DEFAULTS = {
    "seeds": [0, 1, 2, 3, 4],
    "jobs": 1,
    "pretrain_epochs": None,
    "steps": 4000,
    "val_every": 400,
}
"""Real data: one run at a time on one GPU; the pretraining schedule of the experiment."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctvoco-study",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--data",
        choices=("phantom", "rsna"),
        default="phantom",
        help="the patients (default phantom)",
    )
    p.add_argument(
        "--root", type=Path, help="the RSNA 2023 copy (train.csv, train_images) for --data rsna"
    )
    p.add_argument(
        "--flare-root", type=Path, help="FLARE23 volumes added to pretraining (--data rsna)"
    )
    p.add_argument("--cache-dir", type=Path, help="volume caches (default OUT/cache; --data rsna)")
    p.add_argument("--out", type=Path, default=Path("label_efficiency"), help="working folder")
    p.add_argument("--arms", nargs="+", help="arms to run (default: every arm whose inputs exist)")
    p.add_argument(
        "--backbone",
        help="timm backbone (default test_efficientnet on the phantom, efficientnet_b0 on RSNA)",
    )
    p.add_argument(
        "--pretrained", type=Path, help="local ImageNet weights of the backbone (the ImageNet arms)"
    )
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", help="finetuning seeds (default 0 1 2 3 4)")
    p.add_argument(
        "--pretrain-seeds", type=int, nargs="+", default=[0, 1], help="VoCo pretraining seeds"
    )
    p.add_argument(
        "--steps",
        type=int,
        help="optimiser steps per finetuning run, at most (phantom 1000, RSNA 4000)",
    )
    p.add_argument(
        "--val-every", type=int, help="optimiser steps between validations (phantom 100, RSNA 400)"
    )
    p.add_argument(
        "--patience",
        type=int,
        default=4,
        help="validations without improvement before a run stops (0: never)",
    )
    p.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="best",
        help="checkpoint: best on the validation split, or the last step",
    )
    p.add_argument(
        "--pretrain-epochs",
        type=int,
        help="VoCo epochs (phantom default 12; RSNA: the experiment's schedule)",
    )
    p.add_argument("--jobs", type=int, help="runs side by side (phantom default 2, RSNA 1)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    add_override_option(p, example="trainer.precision=bf16-mixed")
    p.add_argument(
        "--pretrain-set",
        dest="pretrain_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for ctvoco-pretrain only",
    )
    p.add_argument(
        "--finetune-set",
        dest="finetune_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for ctvoco-finetune only",
    )
    return p


def data_source(args: argparse.Namespace, out: Path) -> StudyData:
    """The phantom, or the RSNA copy at ``--root``."""
    if args.data == "phantom":
        for option in ("root", "flare_root", "cache_dir"):
            if getattr(args, option) is not None:
                raise UserError(f"--{option.replace('_', '-')} is for --data rsna")
        return PhantomData(out)
    if args.root is None:
        raise UserError("--data rsna needs --root (the RSNA 2023 copy: train.csv, train_images)")
    return RsnaData(
        out, args.root.resolve(), args.flare_root and args.flare_root.resolve(), args.cache_dir
    )


def weights_folder(out: Path, backbone: str, weights: Path) -> Path:
    """A folder holding ``weights`` as ``<backbone><suffix>``, which the programs look for."""
    if weights.stem == backbone:
        return weights.parent
    folder = out / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"{backbone}{weights.suffix}"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(weights)
    return folder


def selection_rule(args: argparse.Namespace) -> str:
    """How each finetuning run's checkpoint is chosen, in words."""
    if args.selection == "last":
        return f"the checkpoint after {args.steps} steps (a fixed-step rule)"
    stopping = (
        f"stopping after {args.patience} validations without improvement"
        if args.patience > 0
        else "no early stopping"
    )
    return (
        f"the best validation score, validated every {args.val_every} of at most "
        f"{args.steps} steps, {stopping}"
    )


def protocol_lines(facts: dict, arms: list, args: argparse.Namespace, backbone: str) -> str:
    """The protocol as a Markdown list (the head of ``summary.md``)."""
    patients = facts["patients"]
    return "\n".join(
        [
            f"- data: {patients['data']}",
            f"- evaluated: {patients['evaluated']} ({facts['evaluated_patients']['count']} "
            "patients; no run trains or validates on them, checked after every run)",
            f"- validation: {patients['validation']}",
            f"- labelled fractions of the training pool ({patients['training_pool']}): "
            + ", ".join(f"{f:.0%}" for f in args.fractions),
            f"- pretraining: {patients['pretraining']}",
            f"- arms: {', '.join(a.name for a in arms)}; backbone {backbone}",
            f"- checkpoint: {facts['selection']}",
        ]
    )


def run(args: argparse.Namespace) -> Path:
    started = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = data_source(args, out)
    defaults = PHANTOM_DEFAULTS if args.data == "phantom" else RSNA_DEFAULTS
    args.steps = args.steps or defaults["steps"]
    args.val_every = args.val_every or defaults["val_every"]
    backbone = args.backbone or data.default_backbone
    weights = imagenet_weights(backbone, args.pretrained)
    arms, note = select_arms(args.arms, backbone, weights)
    if note:
        print(f"ctvoco-study: {note}", flush=True)
    seeds = args.seeds or defaults["seeds"]
    pretraining, finetuning = plan_runs(arms, args.fractions, seeds, args.pretrain_seeds)
    jobs = args.jobs or defaults["jobs"]
    settings = Settings(
        backbone=backbone,
        steps=args.steps,
        val_every=args.val_every,
        patience=args.patience,
        selection=args.selection,
        pretrain_epochs=args.pretrain_epochs or defaults["pretrain_epochs"],
        jobs=jobs,
        num_workers=max(1, (os.cpu_count() or 2) // jobs) if args.data == "phantom" else None,
        weights_dir=None if weights is None else weights_folder(out, backbone, weights),
        overrides=tuple(args.overrides),
        pretrain_overrides=tuple(args.pretrain_overrides),
        finetune_overrides=tuple(args.finetune_overrides),
    )
    print(
        f"ctvoco-study: {len(pretraining)} pretraining and {len(finetuning)} finetuning runs "
        f"({', '.join(a.name for a in arms)}; fractions {args.fractions}; seeds {seeds}; "
        f"pretraining seeds {args.pretrain_seeds}) in {out}",
        flush=True,
    )
    data.prepare()
    held = data.held_out()
    evaluated = held.labels["patient_id"].astype(str)
    facts = {
        "data": args.data,
        "patients": data.describe(),
        "evaluated_patients": patients_digest(evaluated),
        "selection": selection_rule(args),
    }
    write_protocol(
        out / "protocol.json",
        {
            **facts,
            "arms": [a.name for a in arms],
            "fractions": args.fractions,
            "seeds": seeds,
            "pretrain_seeds": args.pretrain_seeds,
            "backbone": backbone,
            "imagenet_weights": None if weights is None else str(weights),
            "steps": args.steps,
            "command": sys.argv,
        },
    )
    pretrain_all(data, out, pretraining, held, settings, facts, started)
    finetune_all(data, out, finetuning, held, settings, facts, started)
    pool = data.pool_size()
    extra = {}
    predictions = {}
    for r in finetuning:
        done = read_done(finetune_dir(out, r))
        extra[r] = {
            "labelled_patients": max(1, round(r.fraction * pool)),
            "steps_trained": done["steps_trained"],
            "selected_step": done["selected_step"],
        }
        predictions[r] = pd.read_csv(finetune_dir(out, r) / PREDICTIONS_FILE)
    results = collect(finetuning, predictions, held.labels, extra)
    write_csv_atomic(out / "results.csv", results.runs, index=False)
    tables = summary_tables(results, n_resamples=args.resamples)
    for name, table in tables.items():
        write_csv_atomic(out / f"{name}.csv", table, index=False)
    text = (
        protocol_lines(facts, arms, args, backbone)
        + f"\n- seeds: finetuning {seeds}, pretraining {args.pretrain_seeds}\n\n"
        + markdown(tables, len(evaluated))
    )
    write_text_atomic(out / "summary.md", text)
    plot(tables, out / "label_efficiency.png")
    elapsed = time.perf_counter() - started
    print("\n" + text)
    print(
        f"wall time {elapsed / 60:.1f} min on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; results in {out}"
    )
    return out


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        run(args)
    except UserError as exc:
        raise SystemExit(f"ctvoco-study: {exc}") from None
