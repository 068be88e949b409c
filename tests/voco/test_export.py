"""Tests for ctvoco.voco.export.BackboneExport: the exported backbone loads into plain timm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import timm
import torch
from torch.utils.data import DataLoader

from ctvoco.models.checkpoints import export_state_dict
from ctvoco.voco.export import BackboneExport
from ctvoco.voco.module import VoCoPretrainer
from ctvoco.voco.views import VoCoViews
from tests.training.module_args import build

BACKBONE = "test_efficientnet"


def tiny_loader() -> DataLoader:
    views = VoCoViews(grid=2, crop_size=32, num_random=2, num_slices=2, depth=4)
    samples = []
    for seed in range(2):
        rng = np.random.default_rng(seed)
        volume = rng.integers(0, 60, size=(6, 40, 40)).astype(np.uint8)
        volume[:, 6:30, 10:34] += 150
        samples.append(views(volume, rng))
    return DataLoader(samples, batch_size=2)


def tiny_module() -> VoCoPretrainer:
    return build(
        VoCoPretrainer,
        backbone=BACKBONE,
        crop_size=32,
        grid=2,
        num_random=2,
        head_hidden=32,
        head_out=16,
        lr=1e-3,
        warmup_steps=1,
    )


def test_export_state_dict_has_exactly_timms_keys():
    backbone = timm.create_model(BACKBONE, in_chans=1, num_classes=0)
    exported = export_state_dict(backbone.state_dict(), BACKBONE, in_chans=1)
    reference = timm.create_model(BACKBONE, in_chans=1)
    assert list(exported) == list(reference.state_dict())
    reference.load_state_dict(exported, strict=True)
    for key, value in backbone.state_dict().items():
        assert torch.equal(exported[key], value), key


def test_backbone_export_callback_writes_a_strictly_loadable_file(tmp_path: Path):
    module = tiny_module()
    directory = tmp_path / "run" / "export"
    export = BackboneExport(directory)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[export],
    )
    trainer.fit(module, tiny_loader())

    path = directory / f"{BACKBONE}.pt"
    assert export.path == path
    assert path.is_file()
    assert sorted(p.name for p in directory.iterdir()) == [f"{BACKBONE}.json", f"{BACKBONE}.pt"]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["backbone"] == BACKBONE
    assert meta["in_chans"] == 1
    assert meta["global_step"] == 1

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(BACKBONE, in_chans=1)
    model.load_state_dict(state, strict=True)
    trained = module.student_encoder.backbone.state_dict()
    for key, value in trained.items():
        assert torch.equal(model.state_dict()[key], value), key
    # It is the student (trained) backbone, not the teacher.
    teacher = module.teacher_encoder.backbone.state_dict()
    assert any(not torch.equal(state[k], teacher[k]) for k in teacher)


def test_the_export_is_written_by_the_one_writer_of_the_checkpoint_contract(
    tmp_path: Path, monkeypatch
) -> None:
    import ctvoco.models.checkpoints as contract
    import ctvoco.voco.export as export_source

    calls: list[Path] = []
    writer = contract.write_backbone_export

    def record(state, name, in_chans, path, **meta):
        calls.append(Path(path))
        return writer(state, name, in_chans, path, **meta)

    monkeypatch.setattr(contract, "write_backbone_export", record)
    monkeypatch.setattr(export_source, "write_backbone_export", record)
    module = tiny_module()
    BackboneExport(tmp_path / "a").on_fit_end(pl.Trainer(logger=False), module)
    contract.export_backbone(
        tmp_path / "a" / f"{BACKBONE}.pt", tmp_path / "b" / "backbone.pt", name=BACKBONE
    )
    assert calls == [tmp_path / "a" / f"{BACKBONE}.pt", tmp_path / "b" / "backbone.pt"]
    text = Path(export_source.__file__).read_text()
    assert "torch_save_atomic" not in text and "write_text_atomic" not in text
