"""What the training entry points share: synthetic data on demand, data modules, resuming."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from ctvoco.cli.components import build
from ctvoco.errors import UserError

if TYPE_CHECKING:  # torch is imported only once a checkpoint is read
    from ctvoco.models.checkpoints import CheckpointError

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
    """``ckpt_path`` as a checked file: a path, or ``last`` (the run's newest checkpoint).

    The file is read as data (weights only) and checked before training starts: it must be a
    complete Lightning checkpoint with the state to resume from, written by this program's
    module (``model.module._target_``) with the same backbone. For ``last``, a newest
    checkpoint that is truncated or corrupt (an interrupted write) is skipped, with a warning
    naming it and the checkpoint used instead.

    Raises:
        UserError: One sentence naming ``ckpt_path``, the file and what is wrong with it.
    """
    value = cfg.get("ckpt_path")
    if value in (None, ""):
        return None
    from ctvoco.models.checkpoints import CheckpointError

    if value == "last":
        return str(_last_usable_checkpoint(cfg, Path(cfg.paths.output_dir)))
    path = Path(str(value))
    try:
        check_resume_checkpoint(cfg, path)
    except CheckpointError as exc:
        raise UserError(f"ckpt_path={_explain(cfg, exc)}") from exc
    return str(path)


def _last_usable_checkpoint(cfg: DictConfig, run_dir: Path) -> Path:
    """The newest checkpoint of ``run_dir`` that is complete, skipping cut-short ones."""
    from ctvoco.models.checkpoints import CheckpointError

    candidates = checkpoints_newest_first(run_dir)
    if not candidates:
        raise UserError(
            f"ckpt_path=last: no checkpoint in {run_dir} (looked for "
            f"{', '.join(LAST_CHECKPOINTS)}); set paths.output_dir= to the directory of "
            "the run to resume"
        )
    skipped: list[CheckpointError] = []
    for path in candidates:
        try:
            check_resume_checkpoint(cfg, path)
        except CheckpointError as exc:
            if not exc.incomplete:
                raise UserError(f"ckpt_path=last: {_explain(cfg, exc)}") from exc
            skipped.append(exc)
            continue
        if skipped:
            log.warning(
                "ckpt_path=last: the newest checkpoint %s is %s; resuming from %s, the newest "
                "complete one%s",
                skipped[0].path,
                skipped[0].problem,
                path,
                f" ({len(skipped) - 1} more skipped)" if len(skipped) > 1 else "",
            )
        return path
    raise UserError(
        f"ckpt_path=last: no complete checkpoint in {run_dir}; the newest, {skipped[0]}"
        + (f" (and {len(skipped) - 1} older ones)" if len(skipped) > 1 else "")
    )


def check_resume_checkpoint(cfg: DictConfig, path: Path) -> dict[str, Any]:
    """Read ``path`` (weights only) and check this run can resume from it.

    Raises:
        CheckpointError: The file is missing, truncated or corrupt, holds pickled objects,
            is no Lightning checkpoint, lacks the state to resume from, was written by
            another program, or has another backbone than ``model.module``.
    """
    from ctvoco.models.checkpoints import CheckpointError, read_lightning_checkpoint

    raw = read_lightning_checkpoint(path, module=_module_name(cfg), resume=True)
    hparams = raw.get("hyper_parameters") or {}
    for key in ARCHITECTURE_KEYS:
        wanted, saved = _module_value(cfg, key), hparams.get(key)
        if wanted is not None and saved is not None and str(wanted) != str(saved):
            raise CheckpointError(
                path,
                f"trained with model.module.{key}={saved}, but this run sets "
                f"model.module.{key}={wanted}; resume with the same {key}",
                "other_model",
            )
    return raw


ARCHITECTURE_KEYS = ("backbone", "in_chans")
"""``model.module`` keys a resumed run must share with its checkpoint (they shape the weights)."""


def _module_value(cfg: DictConfig, key: str) -> Any:
    """``cfg.model.module.<key>``, or ``None`` when the config has no such key."""
    return OmegaConf.select(cfg, f"model.module.{key}", default=None)


def _module_name(cfg: DictConfig) -> str | None:
    """The class name of the run's module (``model.module._target_``), if the config has one."""
    return str(_module_value(cfg, "_target_") or "").rpartition(".")[2] or None


def _explain(cfg: DictConfig, exc: CheckpointError) -> str:
    """``exc``'s message; for another program's checkpoint, also what to do instead."""
    from ctvoco.models.checkpoints import program_of_module

    wanted = program_of_module(_module_name(cfg) or "")
    if exc.reason != "other_program" or wanted is None:
        return str(exc)
    hint = f"{wanted.program} resumes only its own checkpoints"
    if wanted.module == "InjuryClassifier" and exc.found is not None:
        hint += (
            f" (to start from this pretrained backbone instead, set "
            f"model.module.init=voco:{exc.path} and leave ckpt_path unset)"
        )
    return f"{exc}; {hint}"


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of the run directory's :data:`LAST_CHECKPOINTS`, if any."""
    candidates = checkpoints_newest_first(run_dir)
    return candidates[0] if candidates else None


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    """The run directory's :data:`LAST_CHECKPOINTS`, most recently written first."""
    candidates = {p for pattern in LAST_CHECKPOINTS for p in run_dir.glob(pattern) if p.is_file()}
    return sorted(candidates, key=lambda p: (p.stat().st_mtime_ns, str(p)), reverse=True)


def metric(trainer: Any, name: str) -> float | None:
    """A logged metric as a float, or ``None``."""
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)
