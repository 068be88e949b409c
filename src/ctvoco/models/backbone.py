"""timm backbones by name: creation, ImageNet weights from local files, pooled slice encoders.

ctvoco relies only on timm's backbone contract (``forward_features``, ``num_features``,
``reset_classifier``): any timm model name works, with ``in_chans=1``. Backbones are built
with ``num_classes=0`` so their state-dict keys are timm's own, without the classifier.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import Tensor, nn

from ctvoco.errors import DataError, UserError

POOLINGS = ("avg", "flatten")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
WEIGHTS_ENV = "CTVOCO_WEIGHTS_DIR"
"""Environment variable naming a folder of ImageNet weight files (``<model name>.<ext>``)."""


def check_backbone_name(name: str) -> str:
    """The name if timm knows it, else a :class:`UserError` with close matches."""
    if name in timm.list_models() or timm.is_model(name):
        return name
    stem = name.split("_")[0].split(".")[0]
    close = timm.list_models(f"*{stem}*")[:8]
    hint = f"; similar names: {', '.join(close)}" if close else ""
    raise UserError(f"unknown timm backbone {name!r}{hint} (see timm.list_models())")


def local_imagenet_weights(
    name: str, weights_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """A local ImageNet weight file for ``name``: ``<dir>/<name>.{safetensors,pth,pt,bin}``.

    ``dir`` is ``weights_dir``, else ``$CTVOCO_WEIGHTS_DIR``, else ``~/.cache/ctvoco/weights``.
    """
    folder = Path(
        weights_dir or os.environ.get(WEIGHTS_ENV) or Path.home() / ".cache/ctvoco/weights"
    )
    for suffix in WEIGHT_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def create_backbone(
    name: str,
    *,
    in_chans: int = 1,
    init: Literal["random", "imagenet"] = "random",
    weights_dir: str | os.PathLike[str] | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A timm backbone without classifier (``num_classes=0``), ``in_chans`` channels.

    Args:
        name: Any timm model name (``efficientnet_b0``, ``efficientnetv2_rw_s``, ...).
        in_chans: Input channels (1 for single-window CT).
        init: ``random``, or ``imagenet`` from a LOCAL file (no download; see
            :func:`local_imagenet_weights`); timm adapts the stem to ``in_chans``.
        weights_dir: Folder holding ``<name>.safetensors`` (or ``.pth``) ImageNet weights.
        drop_rate: Dropout before the (absent) classifier, kept for parity.
        drop_path_rate: Stochastic depth.

    Raises:
        UserError: Unknown name, unknown init, or ImageNet weights not found locally.
    """
    check_backbone_name(name)
    kwargs = {
        "in_chans": in_chans,
        "num_classes": 0,
        "drop_rate": drop_rate,
        "drop_path_rate": drop_path_rate,
    }
    if init == "random":
        return timm.create_model(name, pretrained=False, **kwargs)
    if init != "imagenet":
        raise UserError(f"backbone init must be 'random' or 'imagenet'; got {init!r}")
    path = local_imagenet_weights(name, weights_dir)
    if path is None:
        folder = weights_dir or os.environ.get(WEIGHTS_ENV) or "~/.cache/ctvoco/weights"
        raise UserError(
            f"ImageNet weights for {name} are not available offline: put them at "
            f"{folder}/{name}.safetensors (on a machine with internet: "
            f"timm.create_model('{name}', pretrained=True) then save its state_dict, or download "
            f"the model's file from the Hugging Face hub), or set {WEIGHTS_ENV}=DIR, or use "
            "init=random"
        )
    try:
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
        )
    except Exception as exc:  # unreadable, refused by weights-only loading, or another model's
        raise DataError(
            f"{path}: cannot load ImageNet weights for {name} ({type(exc).__name__}: {exc})"
        ) from exc


class SliceEncoder(nn.Module):
    """A timm backbone applied to 2D slices, pooled to one vector per slice.

    Args:
        backbone: A timm model built with ``num_classes=0`` (see :func:`create_backbone`).
        pooling: ``avg`` (the model's global pooling; independent of the input size) or
            ``flatten`` (the final feature map flattened; ties the output size to the input
            size, as the research code did).
        input_size: Slice size ``(h, w)``; needed to know the ``flatten`` output size.

    Shapes:
        ``(N, C_in, h, w)`` -> ``(N, out_features)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        pooling: str = "avg",
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.out_features = int(backbone.num_features)
        if pooling == "flatten":
            if input_size is None:
                raise ValueError("pooling='flatten' needs input_size to size the output")
            in_chans = _in_chans(backbone)
            with torch.no_grad():
                was_training = backbone.training
                backbone.eval()
                probe = backbone.forward_features(torch.zeros(1, in_chans, *input_size))
                backbone.train(was_training)
            self.out_features = int(probe[0].numel())

    def forward(self, x: Tensor) -> Tensor:
        if self.pooling == "avg":
            return self.backbone(x)
        return self.backbone.forward_features(x).flatten(1)


def _in_chans(backbone: nn.Module) -> int:
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        return int(first.in_channels)
    return int(cfg.get("input_size", (1,))[0])
