"""What the training entry points share: synthetic data on demand, data modules, resuming."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ctvoco.cli.components import build
from ctvoco.errors import UserError

log = logging.getLogger(__name__)


def make_synthetic_if_requested(cfg: DictConfig) -> None:
    """Create the synthetic cohort named by ``cfg.synthetic`` (demo experiments), if any."""
    section = cfg.get("synthetic")
    if not section:
        return
    from ctvoco.synth.cohort import make_synthetic_cohort

    options: dict[str, Any] = OmegaConf.to_container(section, resolve=True)  # type: ignore[assignment]
    root = options.pop("root")
    for key in ("shape", "spacing"):
        if key in options:
            options[key] = tuple(options[key])
    make_synthetic_cohort(root, **options)


def build_datamodule(cfg: DictConfig, purpose: str, views: Any, val_views: Any) -> Any:
    """The run's data module with the program's views; checks its inputs before any work."""
    extra = {"purpose": purpose} if "purpose" in cfg.data else {}
    datamodule = build(cfg, "data", views=views, val_views=val_views, **extra)
    datamodule.check_inputs()
    return datamodule


def without_augmentation(views: Any) -> Any:
    """A copy of a views dataclass with every augmentation field switched off."""
    fields = getattr(views, "__dataclass_fields__", {})
    off = {
        name: (False if isinstance(getattr(views, name), bool) else 0.0)
        for name in fields
        if name.endswith(("_jitter", "_std", "_prob", "augment"))
    }
    return replace(views, **off) if off else views


LAST_CHECKPOINTS = (
    "checkpoints/last.ckpt",
    "checkpoints/latest-step.ckpt",
    "checkpoints/periodic/*.ckpt",
    "hpc_ckpt_*.ckpt",
)
"""Where ``ckpt_path=last`` looks, relative to the run directory: the end-of-epoch, the
every-N-steps and the periodic checkpoints, and the ones Lightning saves before a SLURM
requeue (``hpc_ckpt_<n>.ckpt``)."""


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path`` as a file: a path, or ``last`` (the run directory's newest checkpoint).

    Raises:
        UserError: The file does not exist, or the run directory has no checkpoint.
    """
    value = cfg.get("ckpt_path")
    if value in (None, ""):
        return None
    if value == "last":
        run_dir = Path(cfg.paths.output_dir)
        newest = newest_checkpoint(run_dir)
        if newest is None:
            raise UserError(
                f"ckpt_path=last: no checkpoint in {run_dir} (looked for "
                f"{', '.join(LAST_CHECKPOINTS)}); set paths.output_dir= to the directory of "
                "the run to resume"
            )
        return str(newest)
    path = Path(str(value))
    if not path.is_file():
        raise UserError(f"ckpt_path={value}: no such checkpoint file")
    return str(path)


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of the run directory's :data:`LAST_CHECKPOINTS`, if any."""
    candidates = [p for pattern in LAST_CHECKPOINTS for p in run_dir.glob(pattern) if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def metric(trainer: Any, name: str) -> float | None:
    """A logged metric as a float, or ``None``."""
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)
