"""Tests for ctvoco.models.checkpoints: the checkpoint contract (docs/algorithms.md §2.5)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import timm
import torch
from torch.utils.data import DataLoader

from ctvoco.errors import DataError, UserError
from ctvoco.models.backbone import create_backbone
from ctvoco.models.checkpoints import (
    export_backbone,
    export_state_dict,
    load_backbone_weights,
    read_state_file,
)
from ctvoco.voco.export import BackboneExport
from ctvoco.voco.module import VoCoPretrainer
from ctvoco.voco.views import VoCoViews
from tests.training.module_args import build

BACKBONE = "test_efficientnet"  # classifier key: "classifier"


class NotWeights:
    """A pickled object that is not a tensor container."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def timm_state(in_chans: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """timm's full state dict (with classifier) of a randomly initialised model."""
    torch.manual_seed(seed)
    return timm.create_model(BACKBONE, in_chans=in_chans).state_dict()


def fresh_backbone() -> torch.nn.Module:
    return create_backbone(BACKBONE, in_chans=1)


def assert_backbone_equals(backbone: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A Lightning checkpoint of a one-step VoCo fit and its student backbone tensors."""
    views = VoCoViews(grid=2, crop_size=32, num_random=2, num_slices=2, depth=4)
    samples = []
    for seed in range(2):
        rng = np.random.default_rng(seed)
        volume = rng.integers(0, 60, size=(6, 40, 40)).astype(np.uint8)
        volume[:, 8:32, 4:28] += 150
        samples.append(views(volume, rng))
    module = build(
        VoCoPretrainer,
        backbone=BACKBONE,
        crop_size=32,
        grid=2,
        head_hidden=32,
        head_out=16,
        warmup_steps=1,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(samples, batch_size=2))
    path = tmp_path_factory.mktemp("pretrain") / "last.ckpt"
    trainer.save_checkpoint(path)
    student = {k: v.clone() for k, v in module.student_encoder.backbone.state_dict().items()}
    return path, student


# --------------------------------------------------------------------- export
def test_export_state_dict_keys_are_timms_and_load_strictly():
    backbone = fresh_backbone()
    exported = export_state_dict(backbone.state_dict(), BACKBONE, in_chans=1)
    model = timm.create_model(BACKBONE, in_chans=1)
    assert set(exported) == set(model.state_dict())
    model.load_state_dict(exported, strict=True)
    assert_backbone_equals(backbone, exported)
    assert all(v.is_contiguous() for v in exported.values())


def test_export_state_dict_refuses_incomplete_backbone():
    state = fresh_backbone().state_dict()
    del state["conv_stem.weight"]
    with pytest.raises(DataError, match=r"conv_stem\.weight"):
        export_state_dict(state, BACKBONE)


def test_export_backbone_from_lightning_checkpoint(pretrained, tmp_path: Path):
    ckpt, student = pretrained
    out = export_backbone(ckpt, tmp_path / "out" / "backbone.pt")  # name from hyper_parameters
    assert out == tmp_path / "out" / "backbone.pt"
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backbone"] == BACKBONE
    assert meta["in_chans"] == 1
    assert meta["global_step"] == 1
    assert meta["layout"] == "ctvoco pretraining checkpoint"
    state = torch.load(out, map_location="cpu", weights_only=True)
    model = timm.create_model(BACKBONE, in_chans=1)
    model.load_state_dict(state, strict=True)
    for key, value in student.items():
        assert torch.equal(state[key], value), key


def test_export_backbone_needs_a_name_without_hyper_parameters(tmp_path: Path):
    raw = {f"student.{k}": v for k, v in timm_state().items()}
    source = tmp_path / "research.pt"
    torch.save(raw, source)
    with pytest.raises(DataError, match="name="):
        export_backbone(source, tmp_path / "out.pt")
    out = export_backbone(source, tmp_path / "out.pt", name=BACKBONE)
    timm.create_model(BACKBONE, in_chans=1).load_state_dict(torch.load(out, weights_only=True))


# --------------------------------------------------------------------- import
def test_load_export(tmp_path: Path):
    source = timm_state(seed=1)
    path = tmp_path / "export.pt"
    torch.save(source, path)
    backbone = fresh_backbone()
    report = load_backbone_weights(backbone, path)
    assert_backbone_equals(backbone, source)
    assert report.loaded == len(backbone.state_dict())
    assert report.missing == [] and report.unexpected == []
    assert report.dropped == 2  # classifier.weight, classifier.bias
    assert "plain timm state dict" in report.source


def test_load_safetensors_export(tmp_path: Path):
    from safetensors.torch import save_file

    source = timm_state(seed=2)
    path = tmp_path / "export.safetensors"
    save_file(source, str(path))
    backbone = fresh_backbone()
    load_backbone_weights(backbone, path)
    assert_backbone_equals(backbone, source)


def test_load_lightning_checkpoint(pretrained):
    ckpt, student = pretrained
    backbone = fresh_backbone()
    report = load_backbone_weights(backbone, ckpt)
    assert_backbone_equals(backbone, student)
    assert "ctvoco pretraining checkpoint" in report.source
    assert report.unexpected == []
    assert report.dropped > len(student)  # teacher backbone and both heads


@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_research_state_dict(tmp_path: Path, prefix: str):
    student = timm_state(seed=3)  # includes classifier.* as in the research code
    teacher = timm_state(seed=4)
    head = {"0.weight": torch.randn(8, 4), "0.bias": torch.zeros(8), "3.weight": torch.randn(8, 8)}
    raw = {
        **{f"{prefix}student.{k}": v for k, v in student.items()},
        **{f"{prefix}teacher.{k}": v for k, v in teacher.items()},
        **{f"{prefix}student_proj_head.{k}": v for k, v in head.items()},
        **{f"{prefix}teacher_proj_head.{k}": v for k, v in head.items()},
    }
    assert f"{prefix}student.classifier.weight" in raw
    path = tmp_path / "voco_research.pt"
    torch.save(raw, path)
    backbone = fresh_backbone()
    report = load_backbone_weights(backbone, path)
    assert_backbone_equals(backbone, student)
    assert "research-code" in report.source
    n_backbone = len(backbone.state_dict())
    assert report.loaded == n_backbone
    assert report.missing == []
    assert report.unexpected == []
    # Dropped: the whole teacher, both projection heads, and student.classifier.{weight,bias}.
    assert report.dropped == len(teacher) + 2 * len(head) + 2
    assert "dropped" in report.summary()


def test_load_classifier_checkpoint_layout(tmp_path: Path):
    source = fresh_backbone().state_dict()
    state = {f"net.encoder.backbone.{k}": v for k, v in source.items()}
    state["net.heads.bowel.weight"] = torch.zeros(1, 4)
    path = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": BACKBONE}}, path)
    backbone = fresh_backbone()
    report = load_backbone_weights(backbone, path)
    assert_backbone_equals(backbone, source)
    assert "classifier checkpoint" in report.source
    assert report.dropped == 1


def test_unexpected_keys_are_reported(tmp_path: Path):
    source = timm_state()
    source["extra_adapter.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pt"
    torch.save(source, path)
    report = load_backbone_weights(fresh_backbone(), path)
    assert report.unexpected == ["extra_adapter.weight"]


# --------------------------------------------------------------------- refusals
def test_missing_backbone_keys_are_listed(tmp_path: Path):
    source = timm_state()
    missing = ["conv_stem.weight", "bn1.weight"]
    for key in missing:
        del source[key]
    path = tmp_path / "partial.pt"
    torch.save(source, path)
    backbone = fresh_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(DataError, match="2 missing") as info:
        load_backbone_weights(backbone, path)
    for key in missing:
        assert key in str(info.value)
    assert_backbone_equals(backbone, before)  # nothing was loaded


def test_shape_mismatch_other_in_chans(tmp_path: Path):
    path = tmp_path / "rgb.pt"
    torch.save(timm_state(in_chans=3), path)
    with pytest.raises(DataError, match=r"another shape.*conv_stem\.weight"):
        load_backbone_weights(fresh_backbone(), path)


def test_pickled_object_is_refused(tmp_path: Path):
    path = tmp_path / "object.pt"
    torch.save(NotWeights(), path)
    with pytest.raises(DataError, match="weights-only"):
        load_backbone_weights(fresh_backbone(), path)
    with pytest.raises(DataError):
        read_state_file(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        load_backbone_weights(fresh_backbone(), tmp_path / "absent.pt")


def test_data_error_is_a_user_error():
    assert issubclass(DataError, UserError)
    assert issubclass(DataError, ValueError)


# --------------------------------------------------------------------- atomic exports
def failing_torch_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.save`` writes a few bytes, then fails as on a full disk."""

    def save(obj, target, *args, **kwargs):
        if isinstance(target, str | os.PathLike):
            Path(target).write_bytes(b"PK\x03\x04partial")
        else:
            target.write(b"PK\x03\x04partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save)


def test_a_failing_export_leaves_no_partial_file(pretrained, tmp_path, monkeypatch):
    ckpt, _ = pretrained
    out = tmp_path / "out" / "backbone.pt"
    failing_torch_save(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        export_backbone(ckpt, out)
    assert sorted(p.name for p in out.parent.iterdir()) == []


def test_a_failing_export_keeps_the_previous_export(pretrained, tmp_path, monkeypatch):
    ckpt, _ = pretrained
    out = export_backbone(ckpt, tmp_path / "backbone.pt")
    before = out.read_bytes(), out.with_suffix(".json").read_text()
    failing_torch_save(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        export_backbone(ckpt, out)
    assert (out.read_bytes(), out.with_suffix(".json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.json", "backbone.pt"]


def test_a_failing_end_of_run_export_leaves_no_partial_file(tmp_path, monkeypatch):
    module = build(
        VoCoPretrainer,
        backbone=BACKBONE,
        crop_size=32,
        grid=2,
        head_hidden=32,
        head_out=16,
        warmup_steps=1,
    )
    export = BackboneExport(tmp_path / "export")
    failing_torch_save(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        export.on_fit_end(SimpleNamespace(global_step=3), module)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == []
    assert export.path is None
