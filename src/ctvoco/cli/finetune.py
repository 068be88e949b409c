"""``ctvoco-finetune``: train the CNN-LSTM injury classifier on one fold and evaluate it.

Examples::

    ctvoco-finetune +experiment=rsna data.root=/data/rsna data.fold=0
    ctvoco-finetune -m +experiment=rsna data.root=/data/rsna data.fold=0,1,2,3,4
    ctvoco-cv-report outputs/finetune/multiruns/<date>

Preprocessing workers started while the cache is built import this module again (it is the
program's main module), so torch and Lightning are imported inside :func:`main` only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import OmegaConf

from ctvoco.cli.app import hydra_app

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)


@hydra_app("finetune")
def main(cfg: DictConfig) -> dict[str, float]:
    """Train one fold, then evaluate the weights ``oof_from`` names on the fold and write
    the reports."""
    from ctvoco.cli.components import build, build_trainer
    from ctvoco.cli.training import (
        build_datamodule,
        make_synthetic_if_requested,
        resolve_ckpt_path,
    )
    from ctvoco.reports.evaluation import log_evaluation, write_evaluation
    from ctvoco.training.history import MetricsHistory
    from ctvoco.training.oof import (
        FixedPointCheckpoint,
        check_reachable,
        evaluation_weights,
        parse_oof_rule,
    )
    from ctvoco.training.resume import RNGState

    output_dir = Path(cfg.paths.output_dir)
    rule = parse_oof_rule(cfg.get("oof_from", "best"))
    check_reachable(rule, cfg.get("trainer") or {})
    leak = pretraining_leak(cfg)
    if leak is not None:
        log.warning(leak)
    make_synthetic_if_requested(cfg)
    views = build(cfg.model, "views")
    module = build(cfg.model, "module")  # first: a bad backbone name fails before any data work
    datamodule = build_datamodule(cfg, "classify", views, views.for_eval())
    history = MetricsHistory(output_dir, plot_groups=("loss", "score"))
    fixed = FixedPointCheckpoint(rule, output_dir / "checkpoints")
    # the module records the data's inference spec (preprocessing, views, prevalence) in
    # every checkpoint: InjuryClassifier attaches InferenceSpecFromData itself
    trainer = build_trainer(cfg, extra_callbacks=[history, RNGState(), fixed])
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg), weights_only=True)
    if getattr(datamodule, "fold", 0) is None:
        log.info("no validation fold (data.fold=null): nothing to evaluate")
        return {}
    weights = evaluation_weights(rule, trainer, fixed)
    if weights.selected_on_fold and weights.rule.kind == "last":
        log.warning(
            "oof_from=last with early stopping: the stopping point was chosen on this fold's "
            "validation patients, so its out-of-fold score is optimistic"
        )
    log.info(
        "evaluating the fold with oof_from=%s (%s)",
        weights.rule,
        weights.checkpoint or "the final weights",
    )
    trainer.validate(module, datamodule=datamodule, ckpt_path=weights.ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return module.last_metrics
    if module.last_predictions is None:
        log.warning(
            "no validation predictions came back to this process (with strategy=ddp_spawn they "
            "stay in the workers); use strategy=ddp to get oof.csv and the reports"
        )
        return {}
    labels = datamodule.labels()
    oof = module.last_predictions
    metrics = write_evaluation(
        oof,
        labels,
        output_dir,
        checkpoint=weights.checkpoint,
        oof_from=str(weights.rule),
        oof_step=weights.step,
        selected_on_fold=weights.selected_on_fold,
    )
    _print_metrics(metrics, output_dir)
    log_evaluation(trainer.loggers, output_dir, metrics)
    # Also the evaluated checkpoint's validation metrics under their logged names
    # (val/task_score, ...): what a sweep's optimized_metric names.
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {**metrics, **logged}


CONFIG_LEVELS = 3
"""How many folders above a pretrained file :func:`pretraining_record` looks for the
pretraining run's ``config.yaml`` (``export/``, ``checkpoints/``, ``checkpoints/periodic/``)."""


def pretraining_leak(cfg: DictConfig) -> str | None:
    """Why this fold's validation patients were seen by the pretraining it starts from, if so.

    The pretrained file of ``model.module.init=voco:<path>`` is checked against the RSNA
    folds its pretraining left out: recorded beside an export (``<backbone>.json``), or in
    the pretraining run's ``config.yaml``.

    Returns:
        A warning naming the fold, the file and the folds it left out; ``None`` when the
        fold was left out, pretraining saw no RSNA patient, there is no validation fold, the
        backbone is not pretrained, or nothing records what pretraining saw (logged).
    """
    init = str(OmegaConf.select(cfg, "model.module.init", default="") or "")
    kind, _, source = init.partition(":")
    fold = OmegaConf.select(cfg, "data.fold", default=None)
    if kind != "voco" or not source or fold is None:
        return None
    record, where = pretraining_record(Path(source))
    if where is None:
        log.info(
            "cannot tell which RSNA patients the pretraining of %s saw (no export record or "
            "pretraining config.yaml beside it); it must have left out fold %s",
            source,
            fold,
        )
        return None
    if record is None:
        return None
    excluded = "[" + ",".join(str(f) for f in record["exclude_folds"]) + "]"
    ours = (
        OmegaConf.select(cfg, "data.n_folds", default=5),
        OmegaConf.select(cfg, "data.fold_seed", default=42),
    )
    theirs = (record.get("n_folds"), record.get("fold_seed"))
    advice = (
        "its out-of-fold score is optimistic; pretrain one backbone per fold with that fold "
        "left out (docs/finetuning.md, Cross-validation without leakage)"
    )
    if tuple(theirs) != tuple(ours):
        return (
            f"the validation patients of fold {fold} may have been seen during pretraining: "
            f"{source} left out folds {excluded} of another fold assignment (n_folds="
            f"{theirs[0]}, fold_seed={theirs[1]}; this run: n_folds={ours[0]}, fold_seed="
            f"{ours[1]}; recorded in {where}); {advice}"
        )
    if int(fold) not in record["exclude_folds"]:
        return (
            f"the validation patients of fold {fold} were seen during pretraining: {source} "
            f"was pretrained with data.exclude_folds={excluded} (recorded in {where}); {advice}"
        )
    return None


def pretraining_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The RSNA folds the pretraining of ``path`` left out, and where that is recorded.

    Returns:
        ``(record, where)``: ``record`` as :func:`ctvoco.voco.export.rsna_patients_record`
        writes it (``None``: no RSNA patient was seen); ``where`` the file that says so,
        ``None`` when no file does.
    """
    meta_path = path.with_suffix(".json")
    meta = _read_json(meta_path)
    if "rsna_patients" in meta:
        return meta["rsna_patients"], str(meta_path)
    anchors = [path] + ([Path(str(meta["source"]))] if meta.get("source") else [])
    for anchor in anchors:
        for folder in list(anchor.parents)[:CONFIG_LEVELS]:
            config = folder / "config.yaml"
            found = _pretraining_data(config)
            if found is not None:
                return found[0], str(config)
    return None, None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; empty when the file is missing or not one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _pretraining_data(config: Path) -> tuple[dict[str, Any] | None] | None:
    """``(record,)`` from a pretraining run's ``config.yaml``; ``None`` for another file."""
    try:
        values = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(values, dict) or values.get("task_name") != "pretrain":
        return None
    data = values.get("data") or {}
    nodes = list((data.get("members") or {}).values()) if "members" in data else [data]
    for node in nodes:
        if isinstance(node, dict) and str(node.get("_target_", "")).endswith("RSNADataModule"):
            return (
                {
                    "exclude_folds": sorted(int(f) for f in node.get("exclude_folds") or []),
                    "n_folds": node.get("n_folds", 5),
                    "fold_seed": node.get("fold_seed", 42),
                },
            )
    return (None,)


def _print_metrics(metrics: dict[str, float], output_dir: Path) -> None:
    import pandas as pd

    table = pd.Series(metrics).to_frame("value")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"run directory: {output_dir} (oof.csv, metrics.json, plots)")


if __name__ == "__main__":
    main()
