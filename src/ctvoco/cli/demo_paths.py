"""Where each stage of ``ctvoco-demo`` writes, under its ``--root``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INITS = ("voco", "scratch")
"""The backbone initialisations the demo compares, in the order of its results table."""


@dataclass(frozen=True)
class DemoPaths:
    """Where each stage writes."""

    root: Path

    @property
    def cohort(self) -> Path:
        return self.root / "cohort"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    def finetune(self, init: str) -> Path:
        return self.root / f"finetune_{init}"

    def submission(self, init: str) -> Path:
        return self.root / f"predict_{init}" / "submission.csv"

    @property
    def predict_cache(self) -> Path:
        return self.root / "predict_cache"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def export(self) -> Path | None:
        """The exported backbone: written when pretraining has finished."""
        found = sorted((self.pretrain / "export").glob("*.pt"))
        return found[0] if found else None

    def finetuned(self, init: str) -> bool:
        """Whether finetuning ``init`` has finished (its evaluation is written last)."""
        return (self.finetune(init) / "metrics.json").exists() and self.checkpoint(init) is not None

    def checkpoint(self, init: str) -> Path | None:
        """The checkpoint finetuning selected on its validation fold (``best-*.ckpt``), or
        ``last.ckpt`` when the run never validated."""
        folder = self.finetune(init) / "checkpoints"
        found = [*sorted(folder.glob("best-*.ckpt")), folder / "last.ckpt"]
        return next((path for path in found if path.is_file()), None)
