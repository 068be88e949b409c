"""Every command a study starts composes with the packaged configs, with the intended data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from ctvoco.study.arms import ARMS
from ctvoco.study.design import plan_runs
from ctvoco.study.runs import Settings, finetune_overrides, pretrain_dir, pretrain_overrides
from ctvoco.study.sources import PhantomData, RsnaData


def composed(program: str, overrides: list[str]):
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(config_name=program, overrides=overrides)


def settings(tmp_path: Path, selection: str = "best") -> Settings:
    return Settings(
        backbone="test_resnet",
        steps=300,
        val_every=50,
        patience=3,
        selection=selection,
        pretrain_epochs=2,
        jobs=1,
        weights_dir=tmp_path / "weights",
    )


def fake_export(out: Path, run) -> None:
    folder = pretrain_dir(out, run) / "export"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_resnet.pt").write_bytes(b"x")


@pytest.fixture
def rsna_source(tiny_cohort, tmp_path: Path) -> RsnaData:
    return RsnaData(tmp_path / "study", tiny_cohort.rsna_root, tiny_cohort.flare_root, None)


def test_rsna_commands_keep_the_evaluated_fold_out_of_every_stage(rsna_source, tmp_path) -> None:
    out = rsna_source.out
    arms = [ARMS["scratch"], ARMS["imagenet+voco"]]
    pretraining, finetuning = plan_runs(arms, [0.5], [0], [0])
    s = settings(tmp_path)
    for run in pretraining:
        cfg = composed("pretrain", pretrain_overrides(rsna_source, out, run, s))
        rsna = cfg.data.members.rsna
        assert list(rsna.exclude_folds) == [0, 1] and rsna.purpose == "pretrain"
        assert cfg.data.members.flare.root == str(rsna_source.flare_root)
        assert cfg.model.module.init == "imagenet"
        assert cfg.model.module.weights_dir == str(tmp_path / "weights")
        assert cfg.model.module.backbone == "test_resnet"
        fake_export(out, run)
    for run in finetuning:
        cfg = composed("finetune", finetune_overrides(rsna_source, out, run, s))
        assert cfg.data.fold == 1 and list(cfg.data.exclude_folds) == [0]
        assert cfg.data.train_fraction == 0.5 and cfg.seed == 0
        assert cfg.trainer.max_steps == 300 and cfg.trainer.val_check_interval == 50
        assert cfg.callbacks.early_stopping.patience == 3
        expected = "voco:" if run.arm.voco else "random"
        assert str(cfg.model.module.init).startswith(expected)


def test_phantom_commands_use_the_demo_cohort_and_a_fixed_step_rule(tmp_path) -> None:
    data = PhantomData(tmp_path)
    pretraining, finetuning = plan_runs([ARMS["scratch"], ARMS["voco"]], [0.1], [0], [0])
    s = settings(tmp_path, selection="last")
    cfg = composed("pretrain", pretrain_overrides(data, tmp_path, pretraining[0], s))
    assert OmegaConf.select(cfg, "synthetic.root") == str(tmp_path / "cohort")
    assert list(cfg.data.members.rsna.exclude_folds) == [0]
    assert cfg.trainer.max_epochs == 2 and cfg.seed == 0
    fake_export(tmp_path, pretraining[0])
    for run in finetuning:
        cfg = composed("finetune", finetune_overrides(data, tmp_path, run, s))
        assert cfg.data.fold == 0
        assert "early_stopping" not in cfg.callbacks  # the last checkpoint is scored


def test_the_rsna_evaluated_patients_are_linked_with_their_labels(rsna_source) -> None:
    rsna_source.prepare()
    folds = rsna_source.folds()
    evaluated = set(folds.loc[folds["fold"] == 0, "patient_id"].astype(str))
    held = rsna_source.held_out()
    linked = {p.name for p in held.images.iterdir()}
    assert linked == evaluated
    assert all((held.images / p).is_symlink() for p in linked)
    assert set(held.labels["patient_id"].astype(str)) == evaluated
    assert rsna_source.pool_size() == int(folds["fold"].isin([2, 3, 4]).sum())
    rsna_source.prepare()  # again: the links exist already


def test_a_missing_rsna_copy_is_named(tmp_path: Path) -> None:
    from ctvoco.errors import UserError

    with pytest.raises(UserError, match=r"--root .*nowhere: .*train.csv not found"):
        RsnaData(tmp_path, tmp_path / "nowhere", None, None)
