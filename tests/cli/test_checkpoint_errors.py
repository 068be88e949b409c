"""The installed programs given unusable checkpoints: one line, exit status 2, no traceback.

Real checkpoints of ``ctvoco-finetune`` and ``ctvoco-pretrain`` (one tiny epoch each) are
cut short, swapped between the programs or given a pickled payload.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
SHAPE = "data.preprocess.shape=[16,64,64]"
FINETUNE = [
    "model.module.backbone=test_efficientnet",
    "model.module.hidden=8",
    "model.views.num_slices=4",
    "model.views.crop=48",
    "data.num_workers=0",
    "logger=csv",
]
PRETRAIN = [
    "data=rsna",
    "data.num_workers=0",
    "data.batch_size=2",
    "model.module.backbone=test_efficientnet",
    "model.module.head_hidden=32",
    "model.module.head_out=16",
    "model.module.scheduler.warmup_steps=1",
    "model.views.crop_size=16",
    "model.views.grid=2",
    "model.views.num_slices=4",
    "model.views.depth=8",
    "logger=csv",
]


class Payload:
    """An object that runs a command when unpickled unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def error_line(result: subprocess.CompletedProcess[str], script: str) -> str:
    """Exit status 2 and one short line on stderr (log lines aside); the message."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert len(result.stderr) < 1500, result.stderr
    assert errors[0].startswith(f"{script}: error: "), errors[0]
    message = errors[0].removeprefix(f"{script}: error: ")
    assert "weights_only=False" not in message and "Re-running" not in message, message
    return message


@dataclass
class Runs:
    root: Path
    data: list[str]
    finetune: Path
    pretrain: Path


@pytest.fixture(scope="module")
def runs(tiny_cohort, tmp_path_factory) -> Runs:
    """One epoch of each training program on the tiny cohort, and their last checkpoints."""
    root = tmp_path_factory.mktemp("checkpoint_errors")
    data = [f"data.root={tiny_cohort.rsna_root}", f"data.cache_dir={root / 'cache'}", SHAPE]
    for script, args, name in (
        ("ctvoco-finetune", FINETUNE, "ft"),
        ("ctvoco-pretrain", PRETRAIN, "pt"),
    ):
        result = run(
            script,
            *data,
            *args,
            "trainer.max_epochs=1",
            f"paths.output_dir={root / name}",
            cwd=root,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return Runs(root, data, root / "ft/checkpoints/last.ckpt", root / "pt/checkpoints/last.ckpt")


def truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[: len(data) // 2])
    return target


def with_payload(source: Path, target: Path, marker: Path) -> Path:
    raw = torch.load(source, map_location="cpu", weights_only=True)
    raw["extra"] = Payload(marker)
    torch.save(raw, target)
    return target


def resume(runs: Runs, program: str, ckpt: str, run_dir: Path, epochs: int = 2):
    script, args = (
        ("ctvoco-finetune", FINETUNE) if program == "finetune" else ("ctvoco-pretrain", PRETRAIN)
    )
    result = run(
        script,
        *runs.data,
        *args,
        f"trainer.max_epochs={epochs}",
        f"ckpt_path={ckpt}",
        f"paths.output_dir={run_dir}",
        cwd=runs.root,
    )
    return script, result


@pytest.mark.slow
@pytest.mark.parametrize("program", ["finetune", "pretrain"])
def test_resuming_from_unusable_checkpoints(runs, program, tmp_path) -> None:
    own = runs.finetune if program == "finetune" else runs.pretrain
    other = runs.pretrain if program == "finetune" else runs.finetune
    other_program = "pretrain" if program == "finetune" else "finetune"
    marker = tmp_path / "payload-ran"
    cases = {
        "truncated": (truncated(own, tmp_path / "cut.ckpt"), "truncated"),
        "other": (other, f"a ctvoco-{other_program} checkpoint"),
        "payload": (with_payload(own, tmp_path / "payload.ckpt", marker), "Python objects"),
    }
    for name, (path, expected) in cases.items():
        script, result = resume(runs, program, str(path), tmp_path / name)
        message = error_line(result, script)
        assert str(path) in message and expected in message, message
        assert not (tmp_path / name / "checkpoints").exists(), name
    assert not marker.exists()


@pytest.mark.slow
def test_resuming_last_skips_a_truncated_newest_checkpoint(runs, tmp_path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(runs.root / "ft", run_dir)
    complete = run_dir / "checkpoints" / "last.ckpt"
    newest = truncated(complete, run_dir / "checkpoints" / "latest-step.ckpt")
    # The run is complete (max_epochs=1): restoring the checkpoint is all the fit does.
    _, result = resume(runs, "finetune", "last", run_dir, epochs=1)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = (result.stdout + result.stderr).splitlines()
    [line] = [line for line in logged if "ckpt_path=last" in line]
    assert str(newest) in line and str(complete) in line, line


@pytest.mark.slow
def test_predicting_with_unusable_checkpoints(runs, tiny_cohort, tmp_path) -> None:
    marker = tmp_path / "payload-ran"
    cases = {
        "truncated": (truncated(runs.finetune, tmp_path / "cut.ckpt"), "truncated"),
        "pretrain": (runs.pretrain, "a ctvoco-pretrain checkpoint"),
        "payload": (
            with_payload(runs.finetune, tmp_path / "payload.ckpt", marker),
            "Python objects",
        ),
    }
    for name, (path, expected) in cases.items():
        result = run(
            "ctvoco-predict",
            f"checkpoint={path}",
            f"input={tiny_cohort.rsna_root / 'test_images'}",
            f"paths.output_dir={tmp_path / name}",
            cwd=tmp_path,
        )
        message = error_line(result, "ctvoco-predict")
        assert str(path) in message and expected in message, message
    assert not marker.exists()


@pytest.mark.slow
def test_predicting_into_an_unwritable_place_fails_first(runs, tiny_cohort, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run(
        "ctvoco-predict",
        f"checkpoint={runs.finetune}",
        f"input={tiny_cohort.rsna_root / 'test_images'}",
        f"output={blocker / 'submission.csv'}",
        f"cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    message = error_line(result, "ctvoco-predict")
    assert "output=" in message and "data." not in message, message
    assert not (tmp_path / "cache").exists(), "the series were preprocessed first"
