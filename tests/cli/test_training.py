"""``ckpt_path``: a file, or ``last`` (the newest checkpoint of the run directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ctvoco.cli.training import resolve_ckpt_path
from ctvoco.errors import UserError

LAYOUT = [
    "checkpoints/last.ckpt",
    "checkpoints/latest-step.ckpt",
    "checkpoints/periodic/step0000004.ckpt",
    "checkpoints/periodic/step0000008.ckpt",
    "hpc_ckpt_1.ckpt",
    "hpc_ckpt_2.ckpt",
]


def cfg(run_dir: Path, ckpt_path: str | None):
    return OmegaConf.create({"ckpt_path": ckpt_path, "paths": {"output_dir": str(run_dir)}})


MINIMAL_CHECKPOINT = {
    "state_dict": {},
    "epoch": 0,
    "global_step": 0,
    "pytorch-lightning_version": "2.6.0",
    "optimizer_states": [],
    "loops": {},
}
"""The smallest file a run without a ``model.module`` section resumes from."""


def write_checkpoints(run_dir: Path, ages: dict[str, int]) -> None:
    """One checkpoint per relative path, written ``age`` seconds ago (larger: older)."""
    for name, age in ages.items():
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(MINIMAL_CHECKPOINT, path)
        stamp = 1_700_000_000 - age
        os.utime(path, (stamp, stamp))


@pytest.mark.parametrize("newest", LAYOUT)
def test_last_is_the_newest_checkpoint_of_the_run(newest: str, tmp_path: Path) -> None:
    ages = {name: 100 + 10 * i for i, name in enumerate(LAYOUT)}
    ages[newest] = 1
    write_checkpoints(tmp_path, ages)
    assert resolve_ckpt_path(cfg(tmp_path, "last")) == str(tmp_path / newest)


def test_slurm_requeue_checkpoint_alone_is_found(tmp_path: Path) -> None:
    write_checkpoints(tmp_path, {"hpc_ckpt_3.ckpt": 5})
    assert resolve_ckpt_path(cfg(tmp_path, "last")) == str(tmp_path / "hpc_ckpt_3.ckpt")


def test_best_checkpoints_are_not_resume_points(tmp_path: Path) -> None:
    write_checkpoints(
        tmp_path,
        {"checkpoints/best-epoch003-step0000040.ckpt": 1, "checkpoints/last.ckpt": 50},
    )
    assert resolve_ckpt_path(cfg(tmp_path, "last")) == str(tmp_path / "checkpoints/last.ckpt")


def test_last_without_checkpoints_names_the_run_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"ckpt_path=last: no checkpoint in .*paths\.output_dir="):
        resolve_ckpt_path(cfg(tmp_path, "last"))


def test_explicit_path_and_unset(tmp_path: Path) -> None:
    write_checkpoints(tmp_path, {"mine.ckpt": 1})
    assert resolve_ckpt_path(cfg(tmp_path, str(tmp_path / "mine.ckpt"))) == str(
        tmp_path / "mine.ckpt"
    )
    assert resolve_ckpt_path(cfg(tmp_path, None)) is None
    with pytest.raises(UserError, match="no such checkpoint file"):
        resolve_ckpt_path(cfg(tmp_path, str(tmp_path / "missing.ckpt")))


# --------------------------------------------------------------------------- checking the file
PROGRAM_MODULES = {
    "finetune": "ctvoco.classify.InjuryClassifier",
    "pretrain": "ctvoco.voco.VoCoPretrainer",
}


class Payload:
    """An object that runs a command when unpickled unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def save_module_checkpoint(module, path: Path) -> Path:
    """A Lightning checkpoint of ``module`` (untrained), as the trainer writes it."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.strategy.connect(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def program_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A real Lightning checkpoint of each training program's module."""
    from ctvoco.classify import InjuryClassifier
    from ctvoco.voco import VoCoPretrainer, VoCoViews

    root = tmp_path_factory.mktemp("program_checkpoints")
    return {
        "finetune": save_module_checkpoint(
            InjuryClassifier(backbone="test_efficientnet", hidden=8), root / "finetune.ckpt"
        ),
        "pretrain": save_module_checkpoint(
            VoCoPretrainer(
                backbone="test_efficientnet",
                views=VoCoViews(crop_size=32, grid=2),
                head_hidden=32,
                head_out=16,
            ),
            root / "pretrain.ckpt",
        ),
    }


def program_cfg(program: str, run_dir: Path, ckpt_path: str | None, **module: str):
    return OmegaConf.create(
        {
            "task_name": program,
            "ckpt_path": ckpt_path,
            "paths": {"output_dir": str(run_dir)},
            "model": {
                "module": {
                    "_target_": PROGRAM_MODULES[program],
                    "backbone": "test_efficientnet",
                    **module,
                }
            },
        }
    )


def truncated_copy(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[: len(data) // 2])
    return target


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, message
    assert len(message) < 400, message
    assert "weights_only=False" not in message and "Re-running" not in message, message
    return message


@pytest.mark.parametrize("program", ["finetune", "pretrain"])
def test_a_checkpoint_of_the_program_is_accepted(program, program_checkpoints, tmp_path):
    path = program_checkpoints[program]
    assert resolve_ckpt_path(program_cfg(program, tmp_path, str(path))) == str(path)


@pytest.mark.parametrize("program", ["finetune", "pretrain"])
def test_a_truncated_checkpoint_is_one_line(program, program_checkpoints, tmp_path):
    path = truncated_copy(program_checkpoints[program], tmp_path / "cut.ckpt")
    with pytest.raises(UserError, match=r"ckpt_path=.*cut\.ckpt.*truncated") as info:
        resolve_ckpt_path(program_cfg(program, tmp_path, str(path)))
    one_line(info.value)


@pytest.mark.parametrize(("program", "other"), [("finetune", "pretrain"), ("pretrain", "finetune")])
def test_another_programs_checkpoint_is_refused(program, other, program_checkpoints, tmp_path):
    path = program_checkpoints[other]
    with pytest.raises(UserError, match=rf"{other}\.ckpt.* a ctvoco-{other} checkpoint") as info:
        resolve_ckpt_path(program_cfg(program, tmp_path, str(path)))
    assert f"ctvoco-{program}" in one_line(info.value)


def test_a_plain_state_dict_is_not_a_resumable_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UserError, match=r"weights\.pt.*not a Lightning checkpoint") as info:
        resolve_ckpt_path(program_cfg("finetune", tmp_path, str(path)))
    one_line(info.value)


def test_a_checkpoint_of_another_backbone_is_refused(program_checkpoints, tmp_path):
    path = program_checkpoints["finetune"]
    config = program_cfg("finetune", tmp_path, str(path), backbone="resnet18")
    with pytest.raises(UserError, match=r"backbone=test_efficientnet.*resnet18") as info:
        resolve_ckpt_path(config)
    one_line(info.value)


@pytest.mark.parametrize("program", ["finetune", "pretrain"])
def test_a_pickle_payload_is_never_unpickled(program, program_checkpoints, tmp_path):
    marker = tmp_path / "payload-ran"
    raw = torch.load(program_checkpoints[program], map_location="cpu", weights_only=True)
    raw["extra"] = Payload(marker)
    path = tmp_path / "payload.ckpt"
    torch.save(raw, path)
    with pytest.raises(UserError, match=r"payload\.ckpt.*Python objects") as info:
        resolve_ckpt_path(program_cfg(program, tmp_path, str(path)))
    one_line(info.value)
    assert not marker.exists()


def test_last_skips_a_truncated_newest_checkpoint(program_checkpoints, tmp_path, caplog):
    run_dir = tmp_path / "run"
    good = run_dir / "checkpoints" / "periodic" / "step0000004.ckpt"
    good.parent.mkdir(parents=True)
    good.write_bytes(program_checkpoints["finetune"].read_bytes())
    cut = truncated_copy(program_checkpoints["finetune"], run_dir / "checkpoints" / "last.ckpt")
    os.utime(good, (1_700_000_000, 1_700_000_000))
    os.utime(cut, (1_700_000_100, 1_700_000_100))
    with caplog.at_level("WARNING", logger="ctvoco"):
        chosen = resolve_ckpt_path(program_cfg("finetune", run_dir, "last"))
    assert chosen == str(good)
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(cut) in line and str(good) in line, line


def test_last_with_only_truncated_checkpoints_is_one_line(program_checkpoints, tmp_path):
    run_dir = tmp_path / "run"
    truncated_copy(program_checkpoints["finetune"], run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(UserError, match=r"ckpt_path=last: .*last\.ckpt.*truncated") as info:
        resolve_ckpt_path(program_cfg("finetune", run_dir, "last"))
    one_line(info.value)


def test_validation_views_take_the_centre_crop_without_any_augmentation() -> None:
    from ctvoco.classify import SliceStackViews
    from ctvoco.voco import VoCoViews

    val = SliceStackViews().for_eval()
    assert val == SliceStackViews.plain(), val
    assert val.random_crop is False
    voco = VoCoViews(contrast_jitter=0.2, noise_std=2.0, flip_prob=0.5).for_eval()
    assert (voco.contrast_jitter, voco.noise_std, voco.flip_prob) == (0.0, 0.0, 0.0)
    assert voco.num_random == VoCoViews().num_random
