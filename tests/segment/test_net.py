"""Tests for ctvoco.segment.net: MONAI's FlexibleUNet on timm encoders, VoCo-initialised."""

from __future__ import annotations

import pytest
import torch

from ctvoco.errors import ArgumentError, DataError, UserError
from ctvoco.models.backbone import create_backbone
from ctvoco.segment.net import organ_unet, register_timm_encoder

SMALL = (16, 16, 8, 8, 8)


@pytest.mark.parametrize("backbone", ["test_efficientnet", "test_resnet"])
@pytest.mark.parametrize("size", [(32, 32), (40, 56)])
def test_logits_at_the_input_resolution(backbone, size):
    net = organ_unet(backbone, 6, in_chans=3, decoder_channels=SMALL).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *size))
    assert out.shape == (2, 6, *size)


def test_the_encoder_is_the_timm_backbone_itself():
    net = organ_unet("test_efficientnet", 6, in_chans=3, decoder_channels=SMALL)
    plain = create_backbone("test_efficientnet", in_chans=3)
    assert net.encoder.backbone.state_dict().keys() == plain.state_dict().keys()


def test_a_voco_export_initialises_the_encoder(tmp_path):
    torch.manual_seed(0)
    pretrained = create_backbone("test_efficientnet", in_chans=3)
    path = tmp_path / "test_efficientnet.pt"
    torch.save(pretrained.state_dict(), path)
    net = organ_unet(
        "test_efficientnet", 6, in_chans=3, init=f"voco:{path}", decoder_channels=SMALL
    )
    for name, tensor in pretrained.state_dict().items():
        torch.testing.assert_close(net.encoder.backbone.state_dict()[name], tensor)
    fresh = organ_unet("test_efficientnet", 6, in_chans=3, decoder_channels=SMALL)
    stem = "conv_stem.weight"
    assert not torch.equal(fresh.encoder.backbone.state_dict()[stem], pretrained.state_dict()[stem])


def test_an_export_of_another_input_width_is_refused(tmp_path):
    path = tmp_path / "one_channel.pt"
    torch.save(create_backbone("test_efficientnet", in_chans=1).state_dict(), path)
    with pytest.raises(DataError, match=r"another shape.*in_chans"):
        organ_unet("test_efficientnet", 6, in_chans=3, init=f"voco:{path}", decoder_channels=SMALL)


def test_imagenet_init_without_local_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("CTVOCO_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(UserError, match=r"not available offline.*test_resnet\.safetensors"):
        organ_unet("test_resnet", 6, init="imagenet", decoder_channels=SMALL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init": "voco"}, "init"),
        ({"init": "moco:x.pt"}, "init"),
        ({"decoder_channels": (8, 8, 8)}, "decoder_channels"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        organ_unet("test_efficientnet", 6, **kwargs)


def test_backbones_without_the_five_strides_are_refused():
    with pytest.raises(UserError, match=r"test_convnext.*strides \[4, 8, 16, 32\]"):
        register_timm_encoder("test_convnext")


def test_unknown_backbones_suggest_names():
    with pytest.raises(UserError, match="unknown timm backbone"):
        register_timm_encoder("efficientnet_b99")
