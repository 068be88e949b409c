"""Exact resume and determinism, for both training programs and for preprocessing.

- the same seed gives the same losses step by step;
- a run killed with SIGKILL in the middle of an epoch and resumed from its checkpoint ends
  with exactly the weights of an uninterrupted run;
- preprocessing killed mid-run and run again gives the same cache, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_SHAPE

BIN = Path(sys.executable).parent
SHAPE = f"data.preprocess.shape=[{','.join(map(str, TINY_SHAPE))}]"
COMMON = [
    "data.num_workers=0",
    "data.batch_size=2",
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.max_steps=8",
    "trainer.max_epochs=-1",
    "trainer.enable_progress_bar=false",
    "callbacks.periodic_checkpoint.every_n_train_steps=1",
    "seed=3",
]
PROGRAMS = {
    "pretrain": [
        "data=rsna",
        "model.module.backbone=test_efficientnet",
        "model.module.head_hidden=64",
        "model.module.head_out=32",
        "model.module.scheduler.warmup_steps=2",
        "model.views.crop_size=16",
        "model.views.grid=2",
        "model.views.num_slices=4",
        "model.views.depth=8",
        "model.views.contrast_jitter=0.2",
        "model.views.noise_std=2.0",
    ],
    "finetune": [
        "model.module.backbone=test_efficientnet",
        "model.module.hidden=16",
        "model.module.dropout=0.3",
        "model.views.num_slices=6",
        "model.views.crop=48",
    ],
}


def command(program: str, cohort, cache: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        str(BIN / f"ctvoco-{program}"),
        f"data.root={cohort.rsna_root}",
        f"data.cache_dir={cache}",
        SHAPE,
        *COMMON,
        *PROGRAMS[program],
        f"paths.output_dir={run_dir}",
        *extra,
    ]


def environment() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(
        args, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cache(tiny_rsna_cache) -> Path:
    """A cache built once (so that the runs below only train)."""
    return tiny_rsna_cache


@pytest.mark.slow
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_killed_and_resumed_run_equals_uninterrupted(program, tiny_cohort, cache, tmp_path) -> None:
    """Unbounded epochs (``max_steps`` ends the run), resumed from a named step checkpoint."""
    straight = tmp_path / "straight"
    run(command(program, tiny_cohort, cache, straight), tmp_path)

    interrupted = tmp_path / "interrupted"
    periodic = interrupted / "checkpoints" / "periodic"
    process = subprocess.Popen(
        command(program, tiny_cohort, cache, interrupted),
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(periodic / "step0000004.ckpt", process)  # step 3 is complete on disk
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (periodic / "step0000008.ckpt").exists(), "the run finished before it was killed"
    resume_from = periodic / "step0000003.ckpt"
    run(command(program, tiny_cohort, cache, interrupted, f"ckpt_path={resume_from}"), tmp_path)

    assert_same_weights(
        straight / "checkpoints" / "periodic" / "step0000008.ckpt",
        periodic / "step0000008.ckpt",
    )


# The shipped experiments' settings: a finite number of epochs (which makes Lightning load the
# training data while the optimiser's schedule is built), loader workers kept between epochs,
# validation every few epochs; a cohort and epochs small enough for a test.
EPOCHS = 3
SHIPPED = {
    "pretrain": [
        "data.num_workers=2",
        "data.persistent_workers=true",
        "trainer.max_steps=-1",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.check_val_every_n_epoch=2",
    ],
    "finetune": [
        "+experiment=demo_finetune",
        "~synthetic",
        "data.batch_size=1",
        "model.views.num_slices=6",
        "model.views.crop=48",
        "trainer.max_steps=-1",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.check_val_every_n_epoch=2",
    ],
}


def assert_same_weights(expected_path: Path, actual_path: Path) -> None:
    expected, actual = weights(expected_path), weights(actual_path)
    assert expected.keys() == actual.keys()
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, f"{len(different)} tensors differ after resuming, e.g. {different[:3]}"


def saved_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def start_shipped(program, cohort, cache, run_dir: Path, *extra: str) -> subprocess.Popen:
    """A run with the shipped experiments' settings, in the background."""
    return subprocess.Popen(
        command(program, cohort, cache, run_dir, *SHIPPED[program], *extra),
        cwd=run_dir.parent,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=900)
    assert process.returncode == 0, err[-4000:]


@pytest.fixture(scope="module")
def uninterrupted(tiny_cohort, cache, tmp_path_factory):
    """``program -> (its final step checkpoint, steps per epoch)``, each run made once."""
    runs: dict[str, tuple[Path, int]] = {}

    def get(program: str) -> tuple[Path, int]:
        if program not in runs:
            straight = tmp_path_factory.mktemp(f"straight-{program}") / "run"
            finish(start_shipped(program, tiny_cohort, cache, straight))
            final = sorted((straight / "checkpoints" / "periodic").glob("step*.ckpt"))[-1]
            per_epoch, rest = divmod(saved_step(final), EPOCHS)
            assert rest == 0 and per_epoch >= 4, f"{saved_step(final)} steps in {EPOCHS} epochs"
            runs[program] = final, per_epoch
        return runs[program]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("program", sorted(SHIPPED))
def test_killed_twice_mid_epoch_and_resumed_from_last_equals_uninterrupted(
    program, tiny_cohort, cache, tmp_path, uninterrupted
) -> None:
    """SIGKILL inside the first and inside the second epoch, ``ckpt_path=last`` each time."""

    def start(run_dir: Path, *extra: str) -> subprocess.Popen:
        return start_shipped(program, tiny_cohort, cache, run_dir, *extra)

    final, per_epoch = uninterrupted(program)
    interrupted = tmp_path / "interrupted"
    periodic = interrupted / "checkpoints" / "periodic"
    resumed_at = []
    for epoch in (0, 1):
        kill_after = epoch * per_epoch + per_epoch // 2 - 1
        process = start(interrupted, *(["ckpt_path=last"] if resumed_at else []))
        try:
            wait_for(periodic / f"step{kill_after:07d}.ckpt", process)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        newest = max(periodic.glob("step*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
        resumed_at.append(saved_step(newest))
    assert [step // per_epoch for step in resumed_at] == [0, 1], resumed_at
    assert all(step % per_epoch for step in resumed_at), f"not inside an epoch: {resumed_at}"

    finish(start(interrupted, "ckpt_path=last"))
    assert_same_weights(final, periodic / final.name)


@pytest.mark.slow
@pytest.mark.parametrize("program", sorted(SHIPPED))
@pytest.mark.parametrize("epoch", [0, 1], ids=["epoch0-no-validation", "epoch1-then-validation"])
def test_resumed_from_the_last_batch_of_an_epoch_equals_uninterrupted(
    program, epoch, tiny_cohort, cache, tmp_path, uninterrupted
) -> None:
    """The step checkpoint of an epoch's last batch: saved before the epoch's end hooks ran."""
    final, per_epoch = uninterrupted(program)
    step = (epoch + 1) * per_epoch
    resume_from = final.parent / f"step{step:07d}.ckpt"
    resumed = tmp_path / "resumed"
    finish(start_shipped(program, tiny_cohort, cache, resumed, f"ckpt_path={resume_from}"))
    periodic = resumed / "checkpoints" / "periodic"
    assert not (periodic / f"step{step:07d}.ckpt").exists(), "the resumed run redid a batch"
    assert (periodic / f"step{step + 1:07d}.ckpt").exists()
    assert_same_weights(final, periodic / final.name)


@pytest.mark.slow
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_same_seed_same_losses(program, tiny_cohort, cache, tmp_path) -> None:
    import pandas as pd

    losses = []
    for name in ("a", "b"):
        run(
            command(program, tiny_cohort, cache, tmp_path / name, "trainer.log_every_n_steps=1"),
            tmp_path,
        )
        frame = pd.read_csv(tmp_path / name / "csv" / "steps.csv")
        losses.append(frame["train/loss"].dropna().tolist())
    assert len(losses[0]) >= 5
    assert losses[0] == losses[1]


def checksums(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "volumes").iterdir())
    }


@pytest.mark.slow
def test_killed_preprocessing_rerun_gives_the_same_cache(tiny_cohort, tmp_path) -> None:
    def preprocess(cache_dir: Path, run_dir: Path) -> list[str]:
        return [
            str(BIN / "ctvoco-preprocess"),
            f"data.root={tiny_cohort.rsna_root}",
            f"data.cache_dir={cache_dir}",
            "data.preprocess.shape=[48,128,128]",
            "num_workers=0",
            f"paths.output_dir={run_dir}",
        ]

    reference = tmp_path / "reference"
    run(preprocess(reference, tmp_path / "r1"), tmp_path)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        preprocess(killed, tmp_path / "r2"),
        cwd=tmp_path,
        env=environment(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        records = killed / "records"
        while not records.exists() or len(list(records.glob("*.json"))) < 3:
            assert process.poll() is None, "preprocessing finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    done = len(list((killed / "records").glob("*.json")))
    assert done < len(checksums(reference)), "nothing was left to do after the kill"
    run(preprocess(killed, tmp_path / "r3"), tmp_path)
    assert checksums(killed) == checksums(reference)
    leftovers = [p.name for p in killed.rglob("*") if ".tmp-" in p.name]
    assert not leftovers, leftovers
