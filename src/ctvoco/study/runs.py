"""Training and scoring the runs of a study with the installed programs.

Each run is ``ctvoco-pretrain`` or ``ctvoco-finetune`` started as a user would start it,
``settings.jobs`` at a time (:func:`ctvoco.cli.demo_jobs.run_side_by_side`), in its own
folder under ``<out>/pretrain`` or ``<out>/runs`` with its log beside it. A finetuning run
is then scored on the evaluated patients (its checkpoint chosen by the selection rule),
checked for leakage, and marked done with ``study-done.json``; a re-run of the study
reuses every done run of the same protocol and resumes interrupted ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ctvoco.cli.demo_jobs import Job, failure_message, program, resume_override, run_side_by_side
from ctvoco.errors import DataError
from ctvoco.io.atomic import write_text_atomic
from ctvoco.study.design import FinetuneRun, PretrainRun
from ctvoco.study.protocol import check_no_leak, patients_digest, prepare_run
from ctvoco.study.sources import HeldOut, StudyData

DONE_FILE = "study-done.json"
"""Written into a run folder when the run is trained, scored and checked."""
PREDICTIONS_FILE = "heldout_submission.csv"
"""A finetuning run's predictions for the evaluated patients."""
SELECTIONS = ("best", "last")
"""Checkpoint selection: best on the validation split (early stopping), or the last step."""


@dataclass(frozen=True)
class Settings:
    """How every run of a study trains.

    Attributes:
        backbone: The timm backbone of every arm.
        steps: Optimiser steps per finetuning run (at most, with ``selection="best"``).
        val_every: Optimiser steps between validations.
        patience: Validations without improvement before a run stops (``best`` only; 0
            trains every step).
        selection: ``best`` (the checkpoint best on the validation split) or ``last``
            (a fixed-step rule: the checkpoint after ``steps`` steps).
        pretrain_epochs: VoCo epochs (``None``: the experiment's schedule).
        jobs: Runs side by side.
        num_workers: ``data.num_workers`` of each run (``None``: the config's).
        weights_dir: Folder holding ``<backbone>.<suffix>`` ImageNet weights (ImageNet arms).
        overrides: Hydra overrides for both programs.
        pretrain_overrides: Hydra overrides for ``ctvoco-pretrain`` only.
        finetune_overrides: Hydra overrides for ``ctvoco-finetune`` only.
    """

    backbone: str
    steps: int
    val_every: int
    patience: int
    selection: str
    pretrain_epochs: int | None
    jobs: int
    num_workers: int | None = None
    weights_dir: Path | None = None
    overrides: tuple[str, ...] = ()
    pretrain_overrides: tuple[str, ...] = ()
    finetune_overrides: tuple[str, ...] = ()


def pretrain_dir(out: Path, run: PretrainRun) -> Path:
    return out / "pretrain" / run.name


def finetune_dir(out: Path, run: FinetuneRun) -> Path:
    return out / "runs" / run.name


def _imagenet(settings: Settings) -> list[str]:
    return ["model.module.init=imagenet", f"model.module.weights_dir={settings.weights_dir}"]


def pretrain_overrides(data: StudyData, out: Path, run: PretrainRun, s: Settings) -> list[str]:
    """The overrides that define one pretraining run."""
    epochs = [] if s.pretrain_epochs is None else [f"trainer.max_epochs={s.pretrain_epochs}"]
    return [
        *data.pretrain_overrides(),
        f"paths.output_dir={pretrain_dir(out, run)}",
        f"seed={run.seed}",
        f"model.module.backbone={s.backbone}",
        *(_imagenet(s) if run.imagenet else ["model.module.init=random"]),
        *epochs,
        *s.overrides,
        *s.pretrain_overrides,
    ]


def export_of(out: Path, run: PretrainRun) -> Path:
    """The backbone exported by a finished pretraining run."""
    found = sorted((pretrain_dir(out, run) / "export").glob("*.pt"))
    if not found:
        raise DataError(f"{pretrain_dir(out, run)}: no export/*.pt; delete the folder and re-run")
    return found[0]


def finetune_overrides(data: StudyData, out: Path, run: FinetuneRun, s: Settings) -> list[str]:
    """The overrides that define one finetuning run (what it trains on, how long, from what)."""
    if run.pretrain is not None:
        init = [f"model.module.init=voco:{export_of(out, run.pretrain)}"]
    else:
        init = _imagenet(s) if run.arm.imagenet else ["model.module.init=random"]
    stopping = (
        ["callbacks=[default,early_stopping]", f"callbacks.early_stopping.patience={s.patience}"]
        if s.selection == "best" and s.patience > 0
        else []
    )
    return [
        *data.finetune_overrides(),
        f"paths.output_dir={finetune_dir(out, run)}",
        f"data.train_fraction={run.fraction}",
        f"seed={run.seed}",
        f"model.module.backbone={s.backbone}",
        *init,
        "trainer.max_epochs=-1",
        f"trainer.max_steps={s.steps}",
        f"trainer.val_check_interval={s.val_every}",
        "trainer.check_val_every_n_epoch=null",
        *stopping,
        *s.overrides,
        *s.finetune_overrides,
    ]


def _job(name: str, command: list[str], run_dir: Path, s: Settings) -> Job:
    extra = [] if s.num_workers is None else [f"data.num_workers={s.num_workers}"]
    full = (
        *command,
        *extra,
        "trainer.enable_progress_bar=false",
        "logger=csv",
        *resume_override(run_dir),
    )
    return Job(name, full, run_dir, run_dir.parent / f"{run_dir.name}.log")


def _run_all(jobs: list[Job], started: float, s: Settings) -> None:
    failed = run_side_by_side(jobs, started, at_once=s.jobs, report_every=120.0)
    if failed:
        raise SystemExit(failure_message("ctvoco-study", failed))


def pretrain_all(
    data: StudyData,
    out: Path,
    runs: Sequence[PretrainRun],
    held: HeldOut,
    s: Settings,
    facts: dict[str, Any],
    started: float,
) -> None:
    """Train every pretraining run not done; check what each saw; mark it done."""
    evaluated = set(held.labels["patient_id"].astype(str))
    todo = []
    for run in runs:
        run_dir = pretrain_dir(out, run)
        overrides = pretrain_overrides(data, out, run, s)
        protocol = {"overrides": overrides, "imagenet": run.imagenet, "seed": run.seed, **facts}
        if not prepare_run(run_dir, protocol, DONE_FILE):
            todo.append(
                (run, run_dir, _job(run.name, [program("ctvoco-pretrain"), *overrides], run_dir, s))
            )
    _run_all([job for _, _, job in todo], started, s)
    for run, run_dir, _ in todo:
        record = {"export": str(export_of(out, run)), **check_no_leak(run_dir, evaluated)}
        write_text_atomic(run_dir / DONE_FILE, json.dumps(record, indent=2) + "\n")


def finetune_all(
    data: StudyData,
    out: Path,
    runs: Sequence[FinetuneRun],
    held: HeldOut,
    s: Settings,
    facts: dict[str, Any],
    started: float,
) -> None:
    """Train every finetuning run not done, then score and check each on the evaluated patients."""
    evaluated = set(held.labels["patient_id"].astype(str))
    todo = []
    for run in runs:
        run_dir = finetune_dir(out, run)
        overrides = finetune_overrides(data, out, run, s)
        protocol = {
            "overrides": overrides,
            "arm": run.arm.name,
            "fraction": run.fraction,
            "seed": run.seed,
            "pretrain_seed": None if run.pretrain is None else run.pretrain.seed,
            "selection": s.selection,
            **facts,
        }
        finished = prepare_run(run_dir, protocol, DONE_FILE)
        trained = (run_dir / "metrics.json").exists()  # written last by ctvoco-finetune
        if not (finished or trained):
            todo.append(_job(run.name, [program("ctvoco-finetune"), *overrides], run_dir, s))
    _run_all(todo, started, s)
    for run in runs:
        run_dir = finetune_dir(out, run)
        if (run_dir / DONE_FILE).exists():
            continue
        checkpoint = selected_checkpoint(run_dir, s.selection)
        score_run(checkpoint, held)
        record = {
            "checkpoint": checkpoint.name,
            "steps_trained": checkpoint_step(run_dir / "checkpoints" / "last.ckpt"),
            "selected_step": checkpoint_step(checkpoint),
            "evaluated_patients": patients_digest(evaluated),
            **check_no_leak(run_dir, evaluated),
        }
        write_text_atomic(run_dir / DONE_FILE, json.dumps(record, indent=2) + "\n")
        print(f"ctvoco-study: scored {run.name} ({checkpoint.name})", flush=True)


def selected_checkpoint(run_dir: Path, selection: str) -> Path:
    """The checkpoint the selection rule picks: ``best-*.ckpt`` or ``last.ckpt``."""
    folder = run_dir / "checkpoints"
    found = sorted(folder.glob("best-*.ckpt")) if selection == "best" else [folder / "last.ckpt"]
    if not found or not found[-1].is_file():
        raise DataError(
            f"{folder}: no {'best-*' if selection == 'best' else 'last'}.ckpt; delete {run_dir} and re-run"
        )
    return found[-1]


def checkpoint_step(checkpoint: Path) -> int:
    """The global step stored in a checkpoint (``last.ckpt``: the steps the run trained)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(state["global_step"])


def score_run(checkpoint: Path, held: HeldOut) -> pd.DataFrame:
    """Predict the evaluated patients with one checkpoint (saved beside the run)."""
    from ctvoco.inference import predict_submission

    output = checkpoint.parent.parent / PREDICTIONS_FILE
    if not output.exists():
        predict_submission(
            [checkpoint], held.images, output, cache_dir=held.cache_dir, device="auto"
        )
    return pd.read_csv(output)


def read_done(run_dir: Path) -> dict[str, Any]:
    """The ``study-done.json`` of a run.

    Raises:
        DataError: The run is not done (or its file is unreadable).
    """
    path = run_dir / DONE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: the run is not finished ({exc}); re-run the study") from exc
