"""Which weights a fold's out-of-fold evaluation uses: the rule ``oof_from``.

:func:`parse_oof_rule` reads the rule:

- ``best``: the checkpoint selected on the fold's own validation score (optimistic: the
  fold both chooses and scores the weights);
- ``last``: the final weights of the run;
- ``step:N`` / ``epoch:N``: the weights after optimiser step ``N`` / at the end of epoch
  ``N``, saved during training by :class:`FixedPointCheckpoint`.

:func:`evaluation_weights` says, after ``trainer.fit``, which checkpoint that is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping

from ctvoco.errors import UserError

log = logging.getLogger(__name__)

OOF_RULES = "best, last, step:N or epoch:N"
"""The values ``oof_from`` takes, for messages."""

_FIXED_RULE = re.compile(r"(step|epoch):([0-9]+)")


@dataclass(frozen=True)
class OOFRule:
    """Which weights evaluate a fold: ``kind`` ``best``, ``last``, ``step`` or ``epoch``
    (with ``at``, the step or the 1-based epoch)."""

    kind: str
    at: int | None = None

    def __str__(self) -> str:
        return self.kind if self.at is None else f"{self.kind}:{self.at}"


def parse_oof_rule(value: Any) -> OOFRule:
    """``oof_from`` as an :class:`OOFRule`.

    Raises:
        UserError: Naming ``oof_from`` and the values it takes.
    """
    text = str(value).strip() if isinstance(value, str) else None
    if text in ("best", "last"):
        return OOFRule(text)
    match = _FIXED_RULE.fullmatch(text or "")
    if match is None or int(match.group(2)) < 1:
        raise UserError(
            f"oof_from={value} is not a rule; oof_from must be {OOF_RULES} (N >= 1): the "
            "weights the fold's out-of-fold predictions come from"
        )
    return OOFRule(match.group(1), int(match.group(2)))


def check_reachable(rule: OOFRule, trainer: Mapping[str, Any]) -> None:
    """Refuse, before training, a ``step:N`` / ``epoch:N`` the trainer settings never reach.

    Args:
        rule: The parsed ``oof_from``.
        trainer: The ``trainer`` config section (``max_steps``, ``max_epochs``).

    Raises:
        UserError: Naming ``oof_from`` and the trainer key that ends training sooner.
    """
    key = {"step": "max_steps", "epoch": "max_epochs"}.get(rule.kind)
    if key is None or rule.at is None:
        return
    limit = trainer.get(key)
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < rule.at:
        raise UserError(
            f"oof_from={rule}: training ends before that (trainer.{key}={limit}); choose a "
            f"{rule.kind} up to {limit}, or raise trainer.{key}"
        )


class FixedPointCheckpoint(pl.Callback):
    """Save the checkpoint a ``step:N`` or ``epoch:N`` rule evaluates, when training gets there.

    ``<dirpath>/oof-step<N:07d>.ckpt`` is written right after optimiser step ``N``,
    ``<dirpath>/oof-epoch<N:03d>.ckpt`` at the end of epoch ``N`` (1-based); another rule
    writes nothing.

    Args:
        rule: The parsed ``oof_from``.
        dirpath: The run's checkpoint directory.
    """

    def __init__(self, rule: OOFRule, dirpath: str | Path) -> None:
        self.rule = rule
        self.dirpath = Path(dirpath)
        self._saved_step: int | None = None

    @property
    def path(self) -> Path | None:
        """Where the rule's checkpoint goes (``None`` for ``best`` and ``last``)."""
        if self.rule.kind == "step":
            return self.dirpath / f"oof-step{self.rule.at:07d}.ckpt"
        if self.rule.kind == "epoch":
            return self.dirpath / f"oof-epoch{self.rule.at:03d}.ckpt"
        return None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.rule.kind == "step" and trainer.global_step == self.rule.at:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rule.kind == "epoch" and trainer.current_epoch + 1 == self.rule.at:
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        """Write the checkpoint once (gradient accumulation repeats a global step)."""
        path = self.path
        if path is None or self._saved_step == trainer.global_step:
            return
        trainer.save_checkpoint(path)
        self._saved_step = trainer.global_step


@dataclass(frozen=True)
class EvaluationWeights:
    """The weights a fold is evaluated with.

    Attributes:
        rule: The rule that chose them (``last`` where ``best`` had no checkpoint).
        ckpt_path: The checkpoint to validate with; ``None``: the weights in memory (final).
        checkpoint: The file holding those weights, recorded in ``metrics.json`` (``""``
            when none holds exactly them).
        step: Their optimiser step (``None`` for ``best``).
        selected_on_fold: Whether the fold's own validation patients chose them (``best``,
            or ``last`` with early stopping).
    """

    rule: OOFRule
    ckpt_path: str | None
    checkpoint: str
    step: int | None
    selected_on_fold: bool


def evaluation_weights(
    rule: OOFRule, trainer: pl.Trainer, fixed: FixedPointCheckpoint | None = None
) -> EvaluationWeights:
    """Which weights evaluate the fold after ``trainer.fit``, by ``rule``.

    Args:
        rule: The parsed ``oof_from``.
        trainer: The trainer after ``fit``.
        fixed: The run's :class:`FixedPointCheckpoint` (for ``step:N`` / ``epoch:N``).

    Raises:
        UserError: Training ended before a ``step:N`` / ``epoch:N`` rule's point.
    """
    callback = trainer.checkpoint_callback
    early = any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    if rule.kind == "best":
        best = getattr(callback, "best_model_path", "") or ""
        if best:
            return EvaluationWeights(rule, best, best, None, True)
        log.warning("oof_from=best, but no best checkpoint was saved: evaluating the final weights")
        rule = OOFRule("last")
    if rule.kind == "last":
        last = getattr(callback, "last_model_path", "") or ""
        current = getattr(callback, "_last_global_step_saved", None) == trainer.global_step
        recorded = last if last and current and Path(last).is_file() else ""
        return EvaluationWeights(rule, None, recorded, trainer.global_step, early)
    path = fixed.path if fixed is not None and fixed.rule == rule else None
    if path is None or not path.is_file():
        raise UserError(
            f"oof_from={rule}: training ended at step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}) before it got there, so the fold has no weights to "
            "evaluate; choose an earlier point or train longer"
        )
    import torch

    step = int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    return EvaluationWeights(rule, str(path), str(path), step, False)
