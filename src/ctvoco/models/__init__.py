"""Backbones (timm) and the checkpoint contract."""

from ctvoco.models.backbone import (
    SliceEncoder,
    check_backbone_name,
    create_backbone,
    local_imagenet_weights,
)
from ctvoco.models.checkpoints import (
    LoadReport,
    export_backbone,
    export_state_dict,
    load_backbone_weights,
    read_state_file,
)

__all__ = [
    "LoadReport",
    "SliceEncoder",
    "check_backbone_name",
    "create_backbone",
    "export_backbone",
    "export_state_dict",
    "load_backbone_weights",
    "local_imagenet_weights",
    "read_state_file",
]
