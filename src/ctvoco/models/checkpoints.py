"""The checkpoint contract (ALGORITHMS.md §2.5): exporting and importing backbone weights.

- A pretraining run writes Lightning checkpoints (resumable) and an *exported backbone*:
  a plain state dict whose keys are exactly timm's for the named model, so
  ``timm.create_model(name, in_chans=1).load_state_dict(sd)`` succeeds strictly. (timm's
  default model has a classifier; the export carries that classifier at timm's own
  initialisation so the strict load works; ctvoco drops it when loading a backbone.)
- :func:`load_backbone_weights` imports an export, a ctvoco Lightning checkpoint, or a
  research-code state dict (``student.<timm key>``, optionally under ``module.``, teacher
  and heads dropped), reports missing and unexpected keys, and fails when the backbone is
  not fully covered.

Every file is read with ``torch.load(..., weights_only=True)``: checkpoints are data, not code.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from ctvoco.errors import DataError

log = logging.getLogger(__name__)

STUDENT_BACKBONE_PREFIX = "student_encoder.backbone."
"""Where a :class:`~ctvoco.voco.module.VoCoPretrainer` keeps the student backbone."""

CLASSIFIER_BACKBONE_PREFIX = "net.encoder.backbone."
"""Where an :class:`~ctvoco.classify.module.InjuryClassifier` keeps its backbone."""

RESEARCH_PREFIXES = ("module.student.", "student.")
"""Key prefixes of the research code's raw VoCo state dicts."""


@dataclass
class LoadReport:
    """What an import matched."""

    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: int = 0

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{self.source}: {self.loaded} tensors loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {self.dropped} dropped (teacher/heads/classifier)"
        )


def read_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ``.pt``/``.pth``/``.ckpt``/``.safetensors`` file as data (never as code)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt file
        raise DataError(
            f"{path}: cannot be read as a weights-only checkpoint ({type(exc).__name__}: {exc})"
        ) from exc


def extract_backbone_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], int, str]:
    """Find the backbone tensors in any supported layout.

    Returns:
        ``(state_dict with timm keys, number of dropped keys, detected layout)``.
    """
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    for prefix, layout in (
        (STUDENT_BACKBONE_PREFIX, "ctvoco pretraining checkpoint"),
        (CLASSIFIER_BACKBONE_PREFIX, "ctvoco classifier checkpoint"),
        *((p, "research-code VoCo state dict") for p in RESEARCH_PREFIXES),
    ):
        picked = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if picked:
            return picked, len(tensors) - len(picked), layout
    return tensors, 0, "plain timm state dict"


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Load backbone weights from ``path`` into a timm backbone (``num_classes=0``), strictly.

    Classifier keys in the file are dropped (the backbone has none). Every other key of the
    backbone must be present with the same shape.

    Raises:
        DataError: The file is unreadable, or does not cover the backbone (the message lists
            the first missing and mismatched keys).
    """
    state, dropped, layout = extract_backbone_state(read_state_file(path))
    own = backbone.state_dict()
    classifier = _classifier_keys(backbone)
    extra = [k for k in state if k not in own]
    dropped += sum(1 for k in extra if k.split(".")[0] in classifier)
    unexpected = [k for k in extra if k.split(".")[0] not in classifier]
    missing = [k for k in own if k not in state]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    report = LoadReport(
        f"{path} ({layout})",
        len(own) - len(missing) - len(mismatched),
        missing,
        unexpected,
        dropped,
    )
    if missing or mismatched:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if mismatched:
            k = mismatched[0]
            details.append(
                f"{len(mismatched)} with another shape (e.g. {k}: file {tuple(state[k].shape)} vs "
                f"model {tuple(own[k].shape)})"
            )
        raise DataError(
            f"{path} ({layout}) does not cover the backbone: {'; '.join(details)}; was it made "
            "for another backbone or in_chans?"
        )
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    if unexpected:
        log.warning("%s; unexpected keys ignored: %s", report.summary(), ", ".join(unexpected[:5]))
    else:
        log.info(report.summary())
    return report


def _classifier_keys(backbone: nn.Module) -> set[str]:
    names = {"classifier", "fc", "head", "last_linear"}
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier")
    if isinstance(classifier, str):
        names.add(classifier.split(".")[0])
    return names


def export_state_dict(
    backbone_state: dict[str, Tensor], name: str, in_chans: int = 1
) -> dict[str, Tensor]:
    """timm's full key set for ``name``: the backbone tensors plus timm's fresh classifier."""
    reference = timm.create_model(name, pretrained=False, in_chans=in_chans)
    full = reference.state_dict()
    missing = [
        k
        for k in full
        if k not in backbone_state and k.split(".")[0] not in _classifier_keys(reference)
    ]
    if missing:
        raise DataError(f"backbone state lacks {len(missing)} keys of {name} (e.g. {missing[:3]})")
    return {k: backbone_state.get(k, v).detach().clone().contiguous() for k, v in full.items()}


def export_backbone(
    ckpt_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    name: str | None = None,
    in_chans: int | None = None,
) -> Path:
    """Write the student backbone of a pretraining checkpoint as a plain timm state dict.

    Args:
        ckpt_path: A ctvoco Lightning checkpoint (or any supported layout, see
            :func:`load_backbone_weights`).
        out_path: Output ``.pt`` file; a ``.json`` with the model name and origin goes beside it.
        name: timm model name (default: read from the checkpoint's hyper-parameters).
        in_chans: Input channels (default: from the checkpoint, else 1).

    Returns:
        ``out_path``.
    """
    raw = read_state_file(ckpt_path)
    hparams = raw.get("hyper_parameters", {}) if isinstance(raw, dict) else {}
    name = name or hparams.get("backbone")
    if not name:
        raise DataError(f"{ckpt_path}: no backbone name in the checkpoint; pass name=")
    in_chans = int(in_chans or hparams.get("in_chans", 1))
    state, _, layout = extract_backbone_state(raw)
    exported = export_state_dict(state, name, in_chans)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(exported, tmp)
    tmp.replace(out)
    meta = {
        "backbone": name,
        "in_chans": in_chans,
        "source": str(ckpt_path),
        "layout": layout,
        "global_step": raw.get("global_step") if isinstance(raw, dict) else None,
        "usage": f"timm.create_model('{name}', in_chans={in_chans}).load_state_dict(torch.load(path, weights_only=True))",
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return out
