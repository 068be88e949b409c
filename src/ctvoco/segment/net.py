"""The organ segmentation network: MONAI's ``FlexibleUNet`` decoder on a timm encoder.

MONAI's U-Net takes its encoder from a register of named encoder classes; this module
registers any timm backbone there (:func:`register_timm_encoder`), so the encoder is the
same timm model, with the same state-dict keys, that VoCo pretraining exports and the
classifier uses: a VoCo export initialises it directly. The encoder's five feature maps
(strides 2 to 32, timm's ``forward_intermediates``) feed the decoder's skip connections.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

from monai.networks.blocks import BaseEncoder
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import Tensor, nn

from ctvoco.errors import ArgumentError, UserError
from ctvoco.models.backbone import create_backbone
from ctvoco.models.checkpoints import load_backbone_weights

log = logging.getLogger(__name__)

ENCODER_PREFIX = "timm-"
"""The register name of a timm backbone: ``timm-<model name>``."""

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)
"""The decoder widths from the deepest level up (MONAI's default)."""


class TimmEncoder(BaseEncoder, nn.Module):
    """A timm backbone as a ``FlexibleUNet`` encoder: its feature maps at strides 2-32.

    Subclasses made by :func:`register_timm_encoder` fix the model name and its channels.

    Shapes:
        ``(N, C_in, H, W)`` -> five maps ``(N, c_k, H / 2**(k+1), W / 2**(k+1))``.
    """

    model_name: ClassVar[str] = ""
    channels: ClassVar[tuple[int, ...]] = ()

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        pretrained: bool,
        init: str = "random",
        weights_dir: str | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ArgumentError(
                "spatial_dims", f" must be 2 for a timm encoder; got {spatial_dims}"
            )
        self.backbone = create_backbone(
            self.model_name,
            in_chans=in_channels,
            init="imagenet" if pretrained else "random",
            weights_dir=weights_dir,
        )
        if init.startswith("voco:"):
            report = load_backbone_weights(self.backbone, init.removeprefix("voco:"))
            log.info("segmentation encoder initialised from %s", report.summary())

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.backbone.forward_intermediates(x, intermediates_only=True))

    @classmethod
    def get_encoder_parameters(cls) -> list[dict[str, Any]]:
        return [{"spatial_dims": 2, "in_channels": 1, "pretrained": False}]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        return [cls.channels]

    @classmethod
    def num_outputs(cls) -> list[int]:
        return [len(cls.channels)]

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        return [f"{ENCODER_PREFIX}{cls.model_name}"]


def register_timm_encoder(name: str) -> str:
    """Register timm backbone ``name`` as a ``FlexibleUNet`` encoder; return its register name.

    Raises:
        UserError: ``name`` is not a timm backbone, or its feature maps are not the five
            halvings (strides 2, 4, 8, 16, 32) the U-Net's decoder needs.
    """
    key = f"{ENCODER_PREFIX}{name}"
    if key in FLEXUNET_BACKBONE.register_dict:
        return key
    probe = create_backbone(name)
    info = probe.feature_info
    reductions = [int(f["reduction"]) for f in info]
    if reductions[-5:] != [2, 4, 8, 16, 32]:
        raise UserError(
            f"backbone {name}: its feature maps have strides {reductions}; the U-Net needs five "
            "at strides 2, 4, 8, 16 and 32 (efficientnet and resnet models have them; convnext, "
            "whose first map is at stride 4, does not)"
        )
    channels = tuple(int(f["num_chs"]) for f in info)[-5:]
    encoder = type(
        f"TimmEncoder_{name}",
        (TimmEncoder,),
        {"model_name": name, "channels": channels, "__module__": __name__},
    )
    FLEXUNET_BACKBONE.register_class(encoder)
    return key


STRIDE = 32
"""The encoder's deepest stride: inputs are padded to a multiple of it."""


class OrganUNet(nn.Module):
    """A ``FlexibleUNet`` whose input is zero-padded to a multiple of :data:`STRIDE` and
    whose output is cropped back, so any slice size works (the decoder's skip connections
    need every level to halve exactly).

    Shapes:
        ``(N, C, H, W)`` -> ``(N, classes, H, W)``.
    """

    def __init__(self, unet: FlexibleUNet) -> None:
        super().__init__()
        self.unet = unet

    @property
    def encoder(self) -> TimmEncoder:
        """The timm encoder (``.backbone`` is the timm model)."""
        return self.unet.encoder

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % STRIDE, -w % STRIDE
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        return self.unet(x)[..., :h, :w]


def organ_unet(
    backbone: str,
    num_classes: int,
    *,
    in_chans: int = 1,
    init: str = "random",
    weights_dir: str | os.PathLike[str] | None = None,
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS,
) -> OrganUNet:
    """A 2D U-Net for organ labels on a timm encoder.

    Args:
        backbone: Any timm CNN with feature maps at strides 2-32 (``efficientnet_b0``, ...).
        num_classes: Output channels: the background and one per organ.
        in_chans: Input channels (adjacent slices of a 2.5D input).
        init: ``random``, ``imagenet`` (local weights) or ``voco:<path>`` (a VoCo export of
            the same backbone and ``in_chans``).
        weights_dir: Folder of local ImageNet weights (``init=imagenet``).
        decoder_channels: Five decoder widths, deepest first.

    Shapes:
        ``(N, in_chans, H, W)`` -> ``(N, num_classes, H, W)`` logits, any ``H, W``.

    Raises:
        ArgumentError: A bad ``init`` or ``decoder_channels``.
    """
    kind, _, path = init.partition(":")
    if kind not in ("random", "imagenet", "voco") or (kind == "voco") != bool(path):
        raise ArgumentError("init", f" must be random, imagenet or voco:<path>; got {init!r}")
    if len(decoder_channels) != 5 or min(decoder_channels) < 1:
        raise ArgumentError(
            "decoder_channels", f" must be five positive widths; got {list(decoder_channels)}"
        )
    key = register_timm_encoder(backbone)
    # FlexibleUNet builds the encoder from its register entry: pass the init through it
    parameters = FLEXUNET_BACKBONE.register_dict[key]["parameter"]
    parameters.clear()
    parameters.update(
        spatial_dims=2,
        in_channels=in_chans,
        pretrained=kind == "imagenet",
        init=init,
        weights_dir=None if weights_dir is None else str(weights_dir),
    )
    return OrganUNet(
        FlexibleUNet(
            in_channels=in_chans,
            out_channels=num_classes,
            backbone=key,
            pretrained=kind == "imagenet",
            decoder_channels=tuple(int(c) for c in decoder_channels),
            spatial_dims=2,
        )
    )
