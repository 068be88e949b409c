"""The checkpoint contract (docs/algorithms.md §2.5): exporting and importing backbone weights.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from ctvoco.errors import DataError
from ctvoco.io.atomic import torch_save_atomic, write_text_atomic

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


class CheckpointError(DataError):
    """A checkpoint file that cannot be used; the message is ``<path>: <problem>``.

    Attributes:
        path: The file.
        problem: What is wrong with it, one clause.
        reason: One of :data:`CHECKPOINT_PROBLEMS`.
        found: For ``other_program``: the program that wrote the file, when it is one of
            :data:`CHECKPOINT_PROGRAMS`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        problem: str,
        reason: str,
        found: CheckpointProgram | None = None,
    ) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem
        self.reason = reason
        self.found = found

    @property
    def incomplete(self) -> bool:
        """The file is cut short or damaged (an interrupted write), not a wrong file."""
        return self.reason == "incomplete"


CHECKPOINT_PROBLEMS = (
    "missing",
    "incomplete",
    "objects",
    "not_lightning",
    "other_program",
    "other_model",
    "weights_only",
)
"""The kinds of :class:`CheckpointError`: no such file; truncated or corrupt; pickled Python
objects (refused); not a Lightning checkpoint; written by another program; a model of
another architecture; no optimiser and loop state (cannot resume)."""

ZIP_MAGIC = b"PK\x03\x04"
"""The first bytes of a checkpoint in torch's (zip) format."""


@dataclass(frozen=True)
class CheckpointProgram:
    """Which ctvoco program writes checkpoints of a module, and how to recognise them.

    Attributes:
        program: The console script (``ctvoco-finetune``).
        module: The LightningModule class name.
        prefix: Where the module keeps its backbone in the state dict (every checkpoint of
            the module has keys under it).
    """

    program: str
    module: str
    prefix: str


CHECKPOINT_PROGRAMS = (
    CheckpointProgram("ctvoco-finetune", "InjuryClassifier", CLASSIFIER_BACKBONE_PREFIX),
    CheckpointProgram("ctvoco-pretrain", "VoCoPretrainer", STUDENT_BACKBONE_PREFIX),
)
"""The training programs and their modules' checkpoints."""

LIGHTNING_KEYS = ("state_dict", "epoch", "global_step", "pytorch-lightning_version")
"""Keys every Lightning checkpoint has."""

RESUME_KEYS = ("optimizer_states", "loops")
"""Keys a checkpoint needs to resume training (absent when saved with weights only)."""

_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_checkpoint_data(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a failure is one clear sentence.

    Raises:
        CheckpointError: No such file; the file is truncated or corrupt; it holds pickled
            Python objects other than tensors and plain containers (refused, never run).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(path, "a directory, not a checkpoint file", "missing")
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file", "missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError... on bad files
        if type(exc).__name__ != "UnpicklingError":
            raise CheckpointError(path, _incomplete_problem(path), "incomplete") from exc
        # The weights-only unpickler refused the file. torch's own text suggests an unsafe
        # load: it is not passed on (``from None``).
        blocked = _BLOCKED_GLOBAL.search(str(exc))
        if blocked is None:
            raise CheckpointError(path, _incomplete_problem(path), "incomplete") from None
        raise CheckpointError(
            path,
            f"holds pickled Python objects ({blocked.group(1)}), not only tensors; refused: "
            "ctvoco reads checkpoints as weights-only data and never runs code from them",
            "objects",
        ) from None


def _incomplete_problem(path: Path) -> str:
    """What to say about a file torch cannot read: cut short, or not a checkpoint at all."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(ZIP_MAGIC))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "truncated: the file is empty (was its writing interrupted?)"
    if head == ZIP_MAGIC:
        return "truncated or corrupt: not a complete checkpoint file (was its writing interrupted?)"
    return "truncated or corrupt, or not a checkpoint: torch cannot read the file"


def checkpoint_program(checkpoint: Mapping[str, Any]) -> CheckpointProgram | None:
    """The ctvoco program whose module wrote ``checkpoint`` (by its state-dict keys)."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        return None
    for program in CHECKPOINT_PROGRAMS:
        if any(str(key).startswith(program.prefix) for key in state):
            return program
    return None


def program_of_module(module: str) -> CheckpointProgram | None:
    """The entry of :data:`CHECKPOINT_PROGRAMS` for a module class name, if any."""
    return next((p for p in CHECKPOINT_PROGRAMS if p.module == module), None)


def read_lightning_checkpoint(
    path: str | os.PathLike[str], *, module: str | None = None, resume: bool = False
) -> dict[str, Any]:
    """A Lightning checkpoint, read as data and checked before anything uses it.

    Args:
        path: The ``.ckpt`` file.
        module: The module class it must belong to (``InjuryClassifier``,
            ``VoCoPretrainer``); ``None`` checks only that it is a Lightning checkpoint.
        resume: Also require the optimiser and loop state that resuming training needs.

    Returns:
        The checkpoint dictionary.

    Raises:
        CheckpointError: See :data:`CHECKPOINT_PROBLEMS`.
    """
    raw = load_checkpoint_data(path)
    lacking = [k for k in LIGHTNING_KEYS if not isinstance(raw, dict) or k not in raw]
    if lacking:
        raise CheckpointError(
            path,
            f"not a Lightning checkpoint (no {', '.join(lacking)}; a plain state dict or an "
            "exported backbone?)",
            "not_lightning",
        )
    wanted = program_of_module(module) if module else None
    if wanted is not None:
        found = checkpoint_program(raw)
        if found != wanted:
            what = (
                f"a {found.program} checkpoint ({found.module})"
                if found is not None
                else f"not a checkpoint of a ctvoco module (no weights under {wanted.prefix})"
            )
            raise CheckpointError(
                path,
                f"{what}, not a {wanted.program} one ({wanted.module})",
                "other_program",
                found,
            )
    if resume:
        lacking = [k for k in RESUME_KEYS if k not in raw]
        if lacking:
            raise CheckpointError(
                path,
                f"saved with weights only (no {', '.join(lacking)}): training cannot resume "
                "from it",
                "weights_only",
            )
    return raw


def read_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ``.pt``/``.pth``/``.ckpt``/``.safetensors`` file as data (never as code).

    Raises:
        CheckpointError: The file is missing, unreadable or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found", "missing")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(path, _incomplete_problem(path), "incomplete") from exc
    return load_checkpoint_data(path)


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
    return write_backbone_export(
        state,
        name,
        in_chans,
        out_path,
        source=str(ckpt_path),
        layout=layout,
        global_step=raw.get("global_step") if isinstance(raw, dict) else None,
    )


def write_backbone_export(
    backbone_state: dict[str, Tensor],
    name: str,
    in_chans: int,
    path: str | os.PathLike[str],
    **meta: Any,
) -> Path:
    """Write an exported backbone: ``path`` (timm's keys) and its ``.json`` description.

    Both files are written atomically: a failed write leaves the previous export (or
    none), never a partial file. The ``.json`` holds ``backbone``, ``in_chans``, ``meta``
    and how to load the weights (``usage``).

    Args:
        backbone_state: The backbone's tensors (see :func:`export_state_dict`).
        name: timm model name.
        in_chans: Input channels.
        path: The ``.pt`` file; its folder is created.
        **meta: More entries of the description (``global_step``, ``source``, ...).

    Returns:
        ``path``.
    """
    exported = export_state_dict(backbone_state, name, in_chans)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(exported, out)
    usage = (
        f"timm.create_model('{name}', in_chans={in_chans})"
        ".load_state_dict(torch.load(path, weights_only=True))"
    )
    record = {"backbone": name, "in_chans": in_chans, **meta, "usage": usage}
    write_text_atomic(out.with_suffix(".json"), json.dumps(record, indent=2))
    return out
