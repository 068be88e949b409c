"""Which arms a study runs, and what it says about the ones it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctvoco.errors import UserError
from ctvoco.study.arms import ARMS, imagenet_weights, select_arms


def names(arms) -> list[str]:
    return [arm.name for arm in arms]


def test_without_weights_the_imagenet_arms_are_left_out_with_a_reason() -> None:
    arms, note = select_arms(None, "efficientnet_b0", None)
    assert names(arms) == ["scratch", "voco"]
    assert note is not None
    assert "imagenet and imagenet+voco arms are left out" in note
    assert "efficientnet_b0.safetensors" in note
    assert "--pretrained" in note


def test_with_weights_every_arm_runs(tmp_path: Path) -> None:
    weights = tmp_path / "efficientnet_b0.pth"
    weights.write_bytes(b"w")
    arms, note = select_arms(None, "efficientnet_b0", weights)
    assert names(arms) == ["scratch", "voco", "imagenet", "imagenet+voco"]
    assert note is None


def test_an_imagenet_arm_asked_for_without_weights_is_an_error() -> None:
    with pytest.raises(
        UserError, match=r"--arms imagenet\+voco: no local ImageNet weights for resnet18"
    ):
        select_arms(["scratch", "imagenet+voco"], "resnet18", None)


def test_unknown_arm_names_the_known_ones() -> None:
    with pytest.raises(
        UserError, match=r"unknown arm\(s\) random; choose from scratch, voco, imagenet"
    ):
        select_arms(["random"], "resnet18", None)


def test_requested_arms_keep_their_order_once_each() -> None:
    arms, note = select_arms(["voco", "scratch", "voco"], "resnet18", None)
    assert names(arms) == ["voco", "scratch"] and note is None


def test_arms_say_what_they_start_from() -> None:
    assert (ARMS["imagenet+voco"].imagenet, ARMS["imagenet+voco"].voco) == (True, True)
    assert (ARMS["scratch"].imagenet, ARMS["scratch"].voco) == (False, False)
    assert ARMS["imagenet+voco"].slug == "imagenet_voco"


def test_weights_found_in_the_weights_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CTVOCO_WEIGHTS_DIR", str(tmp_path))
    assert imagenet_weights("resnet18", None) is None
    (tmp_path / "resnet18.safetensors").write_bytes(b"w")
    assert imagenet_weights("resnet18", None) == tmp_path / "resnet18.safetensors"


def test_a_missing_pretrained_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--pretrained .*nothing.pth: no such file"):
        imagenet_weights("resnet18", tmp_path / "nothing.pth")
