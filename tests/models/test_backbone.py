"""Tests for ctvoco.models.backbone: timm backbones, local ImageNet weights, slice encoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from ctvoco.errors import UserError
from ctvoco.models.backbone import (
    WEIGHTS_ENV,
    SliceEncoder,
    check_backbone_name,
    create_backbone,
    local_imagenet_weights,
)

TINY = ["test_efficientnet", "test_resnet"]


@pytest.fixture(autouse=True)
def no_weights_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's weights folders out of the tests."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def imagenet_file(folder: Path, name: str = "test_efficientnet", suffix: str = ".pth") -> dict:
    """Save a 3-channel timm state dict (with classifier) as ``<folder>/<name><suffix>``."""
    torch.manual_seed(0)
    state = timm.create_model(name, in_chans=3).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(folder / f"{name}{suffix}"))
    else:
        torch.save(state, folder / f"{name}{suffix}")
    return state


# ---------------------------------------------------------------------- creation
@pytest.mark.parametrize("name", TINY)
def test_random_backbone_has_timm_contract(name):
    backbone = create_backbone(name, in_chans=1)
    reference = timm.create_model(name, in_chans=1, num_classes=0)
    assert list(backbone.state_dict()) == list(reference.state_dict())
    x = torch.rand(2, 1, 32, 32)
    backbone.eval()
    assert backbone(x).shape == (2, backbone.num_features)
    assert backbone.forward_features(x).shape[:2] == (2, backbone.num_features)


def test_unknown_backbone_lists_similar_names():
    with pytest.raises(UserError, match="similar names") as info:
        check_backbone_name("test_resnett")
    assert "test_resnet" in str(info.value)
    assert check_backbone_name("test_resnet") == "test_resnet"


def test_unknown_init_is_a_user_error():
    with pytest.raises(UserError, match="init"):
        create_backbone("test_resnet", init="scratch")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- local ImageNet weights
def test_imagenet_without_local_weights_names_the_path(tmp_path: Path):
    folder = tmp_path / "weights"
    with pytest.raises(UserError) as info:
        create_backbone("test_efficientnet", init="imagenet", weights_dir=folder)
    message = str(info.value)
    assert f"{folder}/test_efficientnet.safetensors" in message
    assert WEIGHTS_ENV in message
    assert "init=random" in message


def test_imagenet_without_weights_names_env_folder(tmp_path: Path, monkeypatch):
    folder = tmp_path / "from_env"
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    with pytest.raises(UserError, match=f"{folder}/test_efficientnet.safetensors"):
        create_backbone("test_efficientnet", init="imagenet")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_imagenet_from_local_file_adapts_stem(tmp_path: Path, suffix):
    saved = imagenet_file(tmp_path, suffix=suffix)
    backbone = create_backbone("test_efficientnet", init="imagenet", weights_dir=tmp_path)
    loaded = backbone.state_dict()
    # Stem: timm sums the RGB filters into one input channel.
    assert loaded["conv_stem.weight"].shape[1] == 1
    torch.testing.assert_close(
        loaded["conv_stem.weight"], saved["conv_stem.weight"].sum(dim=1, keepdim=True)
    )
    others = [k for k in loaded if k != "conv_stem.weight"]
    assert len(others) > 10
    for key in others:
        assert torch.equal(loaded[key], saved[key]), key
    assert not any(k.startswith("classifier.") for k in loaded)


def test_imagenet_weights_from_env_folder(tmp_path: Path, monkeypatch):
    saved = imagenet_file(tmp_path / "env")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "env"))
    assert local_imagenet_weights("test_efficientnet") == tmp_path / "env/test_efficientnet.pth"
    backbone = create_backbone("test_efficientnet", init="imagenet")
    assert torch.equal(backbone.state_dict()["bn1.weight"], saved["bn1.weight"])


def test_local_weights_prefers_safetensors(tmp_path: Path):
    for suffix in (".bin", ".pt", ".safetensors"):
        (tmp_path / f"m{suffix}").write_bytes(b"")
    assert local_imagenet_weights("m", tmp_path) == tmp_path / "m.safetensors"
    assert local_imagenet_weights("other", tmp_path) is None


# ---------------------------------------------------------------------- slice encoder
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [32, 64])
def test_slice_encoder_avg_vs_flatten(name, size):
    backbone = create_backbone(name, in_chans=1)
    x = torch.rand(3, 1, size, size)
    avg = SliceEncoder(backbone, pooling="avg").eval()
    assert avg.out_features == backbone.num_features
    assert avg(x).shape == (3, backbone.num_features)
    flat = SliceEncoder(backbone, pooling="flatten", input_size=(size, size)).eval()
    cells = (size // 32) ** 2  # tiny timm models reduce by 32
    assert flat.out_features == backbone.num_features * cells
    assert flat(x).shape == (3, flat.out_features)
    assert flat.backbone.training is False  # the probe restored the mode


def test_flatten_probe_keeps_training_mode():
    backbone = create_backbone("test_resnet", in_chans=1).train()
    SliceEncoder(backbone, pooling="flatten", input_size=(32, 32))
    assert backbone.training


def test_flatten_without_input_size_is_a_value_error():
    with pytest.raises(ValueError, match="input_size"):
        SliceEncoder(create_backbone("test_resnet", in_chans=1), pooling="flatten")


def test_bad_pooling_is_a_user_error():
    with pytest.raises(UserError, match="pooling"):
        SliceEncoder(create_backbone("test_resnet", in_chans=1), pooling="max")


def test_multichannel_flatten_probe():
    backbone = create_backbone("test_resnet", in_chans=3)
    encoder = SliceEncoder(backbone, pooling="flatten", input_size=(64, 64)).eval()
    assert encoder(torch.rand(2, 3, 64, 64)).shape == (2, encoder.out_features)
