"""Cross-validation without leakage: pretraining run k never sees fold k, and finetuning
fold k starts from pretraining run k; a finetuning run whose pretrained backbone saw its
validation patients says so."""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import yaml
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Cross-validation without leakage"


def documented_commands(program: str) -> list[list[str]]:
    """The overrides of every ``program -m ...`` command of the finetuning page's section."""
    page = (ROOT / "docs" / "finetuning.md").read_text()
    assert SECTION in page, f"docs/finetuning.md has no section {SECTION!r}"
    section = page.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == [program, "-m"]:
                commands.append(words[2:])
    assert commands, f"no `{program} -m` command in {SECTION!r}"
    return commands


def jobs(overrides: list[str]) -> list[list[str]]:
    """The overrides of each job of a multirun, as Hydra's basic sweeper makes them."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose_job(config: str, overrides: list[str]):
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(config_name=config, overrides=overrides, return_hydra_config=True)


def rsna_exclusion(cfg) -> list[int]:
    """The RSNA folds a pretraining config keeps out (RSNA alone, or RSNA among members)."""
    node = cfg.data.members.rsna if "members" in cfg.data else cfg.data
    return list(node.exclude_folds)


def pretraining_runs() -> dict[int, tuple[Path, str]]:
    """Job number -> (run directory, backbone) of the first documented pretraining command."""
    runs = {}
    for k, job in enumerate(jobs(documented_commands("ctvoco-pretrain")[0])):
        cfg = compose_job("pretrain", job)
        runs[k] = (Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir, cfg.model.module.backbone)
    return runs


def test_each_documented_pretraining_run_excludes_exactly_its_fold():
    for command in documented_commands("ctvoco-pretrain"):
        runs = jobs(command)
        assert len(runs) == 5
        folders = set()
        for k, job in enumerate(runs):
            cfg = compose_job("pretrain", job)
            assert rsna_exclusion(cfg) == [k], " ".join(job)
            folders.add(cfg.hydra.sweep.subdir)
            assert str(k) in cfg.hydra.sweep.subdir
        assert len(folders) == 5  # one run directory per fold


def test_documented_finetuning_fold_k_starts_from_pretraining_run_k():
    pretrained = pretraining_runs()
    (command,) = documented_commands("ctvoco-finetune")
    runs = jobs(command)
    assert len(runs) == 5
    for job in runs:
        cfg = compose_job("finetune", job)
        k = cfg.data.fold
        run_dir, backbone = pretrained[k]
        assert cfg.model.module.init == f"voco:{run_dir}/export/{backbone}.pt"
        assert cfg.model.module.backbone == backbone


# --------------------------------------------------------------------------- the export
def _export(tmp_path: Path, datamodule) -> dict:
    from ctvoco.voco.export import BackboneExport

    backbone = timm.create_model("test_efficientnet", in_chans=1, num_classes=0)
    module = SimpleNamespace(
        hparams=SimpleNamespace(backbone="test_efficientnet", in_chans=1),
        student_encoder=SimpleNamespace(backbone=backbone),
    )
    trainer = SimpleNamespace(global_step=7, datamodule=datamodule)
    callback = BackboneExport(tmp_path / "export")
    callback.on_fit_end(trainer, module)
    return json.loads((tmp_path / "export" / "test_efficientnet.json").read_text())


def _rsna(*folds: int) -> SimpleNamespace:
    return SimpleNamespace(exclude_folds=tuple(folds), n_folds=5, fold_seed=42)


def test_the_export_records_the_rsna_folds_pretraining_left_out(tmp_path):
    meta = _export(tmp_path / "a", _rsna(2))
    assert meta["rsna_patients"] == {"exclude_folds": [2], "n_folds": 5, "fold_seed": 42}
    mixed = SimpleNamespace(members={"flare": SimpleNamespace(), "rsna": _rsna(0, 3)})
    assert _export(tmp_path / "b", mixed)["rsna_patients"]["exclude_folds"] == [0, 3]
    flare_only = SimpleNamespace(members={"flare": SimpleNamespace()})
    assert _export(tmp_path / "c", flare_only)["rsna_patients"] is None


# --------------------------------------------------------------------------- the warning
def finetune_cfg(init: str, fold: int | None = 1, n_folds: int = 5):
    return OmegaConf.create(
        {
            "data": {"fold": fold, "n_folds": n_folds, "fold_seed": 42},
            "model": {"module": {"init": init}},
        }
    )


def write_export(tmp_path: Path, rsna_patients: object = "absent") -> Path:
    export = tmp_path / "pretrain" / "export" / "efficientnet_b0.pt"
    export.parent.mkdir(parents=True)
    export.write_bytes(b"")
    meta = {"backbone": "efficientnet_b0"}
    if rsna_patients != "absent":
        meta["rsna_patients"] = rsna_patients
    export.with_suffix(".json").write_text(json.dumps(meta))
    return export


@pytest.mark.parametrize(
    ("excluded", "fold", "warned"),
    [([0], 1, True), ([1], 1, False), ([0, 1], 1, False), ([0], None, False)],
)
def test_finetuning_warns_when_pretraining_saw_the_validation_fold(
    tmp_path, excluded, fold, warned
):
    from ctvoco.cli.finetune import pretraining_leak

    export = write_export(tmp_path, {"exclude_folds": excluded, "n_folds": 5, "fold_seed": 42})
    message = pretraining_leak(finetune_cfg(f"voco:{export}", fold=fold))
    if warned:
        assert message is not None
        assert f"the validation patients of fold {fold} were seen during pretraining" in message
        assert str(export) in message and "exclude_folds=[0]" in message
    else:
        assert message is None


def test_another_fold_assignment_is_a_leak_too(tmp_path):
    from ctvoco.cli.finetune import pretraining_leak

    export = write_export(tmp_path, {"exclude_folds": [1], "n_folds": 5, "fold_seed": 7})
    message = pretraining_leak(finetune_cfg(f"voco:{export}", fold=1))
    assert message is not None and "fold_seed" in message


def test_pretraining_without_rsna_saw_no_validation_patient(tmp_path):
    from ctvoco.cli.finetune import pretraining_leak

    export = write_export(tmp_path, None)
    assert pretraining_leak(finetune_cfg(f"voco:{export}")) is None


def test_an_export_without_a_record_falls_back_to_the_run_config(tmp_path, caplog):
    from ctvoco.cli.finetune import pretraining_leak

    export = write_export(tmp_path)
    cfg = finetune_cfg(f"voco:{export}")
    with caplog.at_level(logging.INFO, logger="ctvoco"):
        assert pretraining_leak(cfg) is None
    assert any("cannot tell" in r.getMessage() for r in caplog.records)
    config = {
        "task_name": "pretrain",
        "data": {
            "_target_": "ctvoco.data.ConcatDataModule",
            "members": {
                "flare": {"_target_": "ctvoco.data.FLAREDataModule"},
                "rsna": {
                    "_target_": "ctvoco.data.RSNADataModule",
                    "exclude_folds": [0],
                    "n_folds": 5,
                    "fold_seed": 42,
                },
            },
        },
    }
    (tmp_path / "pretrain" / "config.yaml").write_text(yaml.safe_dump(config))
    message = pretraining_leak(cfg)
    assert message is not None and "fold 1" in message


def test_random_and_imagenet_inits_are_not_checked(tmp_path):
    from ctvoco.cli.finetune import pretraining_leak

    assert pretraining_leak(finetune_cfg("random")) is None
    assert pretraining_leak(finetune_cfg("imagenet")) is None


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_the_protocol_end_to_end(tiny_cohort, tiny_rsna_cache, tmp_path):
    """Two folds: pretraining run k leaves out fold k, finetuning fold k starts from it without
    a leak warning; fold 1 from pretraining run 0 gets one."""
    import os
    import subprocess
    import sys

    from tests.conftest import TINY_SHAPE

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "WANDB_MODE": "disabled"}
    data = [
        f"data.root={tiny_cohort.rsna_root}",
        f"data.cache_dir={tiny_rsna_cache}",
        f"data.preprocess.shape=[{','.join(map(str, TINY_SHAPE))}]",
        "data.num_workers=0",
        "data.n_folds=2",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        "logger=csv",
    ]

    def run(program: str, *args: str) -> None:
        result = subprocess.run(
            [str(bin_dir / program), *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]

    pretrain = tmp_path / "pretrain"
    run(
        "ctvoco-pretrain",
        "-m",
        "data=rsna",
        "data.purpose=pretrain",
        *data,
        "data.batch_size=2",
        "model.module.backbone=test_efficientnet",
        "model.module.head_hidden=32",
        "model.module.head_out=16",
        "model.views.crop_size=16",
        "model.views.grid=2",
        "model.views.num_slices=4",
        "model.views.depth=8",
        "data.fold=0,1",
        "data.exclude_folds=[${data.fold}]",
        f"hydra.sweep.dir={pretrain}",
        "hydra.sweep.subdir=fold${data.fold}",
    )
    for k in (0, 1):
        meta = json.loads((pretrain / f"fold{k}/export/test_efficientnet.json").read_text())
        assert meta["rsna_patients"]["exclude_folds"] == [k]
    finetune = tmp_path / "finetune"
    classifier = [
        *data,
        "model.module.backbone=test_efficientnet",
        "model.module.hidden=8",
        "model.views.num_slices=4",
        "model.views.crop=32",
    ]
    run(
        "ctvoco-finetune",
        "-m",
        *classifier,
        "data.fold=0,1",
        f"model.module.init=voco:{pretrain}/fold${{data.fold}}/export/test_efficientnet.pt",
        f"hydra.sweep.dir={finetune}",
    )
    for job in ("0", "1"):
        log_text = (finetune / job / "finetune.log").read_text()
        assert "were seen during pretraining" not in log_text
        assert json.loads((finetune / job / "metrics.json").read_text())["oof_from"] == "last"
    leaky = tmp_path / "leaky"
    run(
        "ctvoco-finetune",
        *classifier,
        "data.fold=1",
        f"model.module.init=voco:{pretrain}/fold0/export/test_efficientnet.pt",
        f"paths.output_dir={leaky}",
    )
    assert "the validation patients of fold 1 were seen during pretraining" in (
        (leaky / "finetune.log").read_text()
    )
