"""Freezing backbone stages goes through ``timm.utils.model.freeze``."""

from __future__ import annotations

import ctvoco.classify.module as classify_module
import ctvoco.models.freezing as freezing
from ctvoco.models.backbone import create_backbone


def test_freezing_calls_timms_freeze(monkeypatch) -> None:
    calls = []
    real = freezing.freeze

    def record(root, submodules=(), include_bn_running_stats=True):
        calls.append((list(submodules), include_bn_running_stats))
        real(root, submodules, include_bn_running_stats=include_bn_running_stats)

    monkeypatch.setattr(freezing, "freeze", record)
    backbone = create_backbone("test_efficientnet")
    count = freezing.freeze_backbone_stages(backbone, 1)
    [(names, with_stats)] = calls
    assert names == ["conv_stem", "bn1", "blocks.0"]
    assert with_stats is False, "BatchNorm layers keep their type and state-dict keys"
    frozen = [p for p in backbone.parameters() if not p.requires_grad]
    assert count == len(frozen) > 0


def test_the_whole_backbone_is_frozen_past_its_last_stage() -> None:
    backbone = create_backbone("test_efficientnet")
    freezing.freeze_backbone_stages(backbone, 99)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert all(n.startswith(("conv_head", "bn2", "classifier")) for n in trainable), trainable


def test_the_classifier_module_does_not_reimplement_freezing() -> None:
    assert not hasattr(classify_module, "_stage_prefix")
    assert classify_module.freeze_backbone_stages is freezing.freeze_backbone_stages
