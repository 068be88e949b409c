"""``ctvoco-finetune``: train the CNN-LSTM injury classifier on one fold and evaluate it.

Examples::

    ctvoco-finetune +experiment=rsna data.root=/data/rsna data.fold=0
    ctvoco-finetune -m +experiment=rsna data.root=/data/rsna data.fold=0,1,2,3,4
    ctvoco-cv-report outputs/finetune/multiruns/<date>

Preprocessing workers started while the cache is built import this module again (it is the
program's main module), so torch and Lightning are imported inside :func:`main` only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ctvoco.cli.app import hydra_app

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)


@hydra_app("finetune")
def main(cfg: DictConfig) -> dict[str, float]:
    """Train one fold, then evaluate the best checkpoint on the fold and write the reports."""
    from ctvoco.cli.components import build, build_trainer
    from ctvoco.cli.training import (
        build_datamodule,
        make_synthetic_if_requested,
        resolve_ckpt_path,
        without_augmentation,
    )
    from ctvoco.reports.evaluation import log_evaluation, write_evaluation
    from ctvoco.training.history import MetricsHistory
    from ctvoco.training.resume import RNGState

    output_dir = Path(cfg.paths.output_dir)
    make_synthetic_if_requested(cfg)
    views = build(cfg.model, "views")
    module = build(cfg.model, "module")  # first: a bad backbone name fails before any data work
    datamodule = build_datamodule(cfg, "classify", views, without_augmentation(views))
    history = MetricsHistory(output_dir, plot_groups=("loss", "score"))
    trainer = build_trainer(cfg, extra_callbacks=[history, RNGState()])
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg), weights_only=True)
    if getattr(datamodule, "fold", 0) is None:
        log.info("no validation fold (data.fold=null): nothing to evaluate")
        return {}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
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
    metrics = write_evaluation(oof, labels, output_dir, checkpoint=best)
    _print_metrics(metrics, output_dir)
    log_evaluation(trainer.loggers, output_dir, metrics)
    # Also the evaluated checkpoint's validation metrics under their logged names
    # (val/task_score, ...): what a sweep's optimized_metric names.
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {**metrics, **logged}


def _print_metrics(metrics: dict[str, float], output_dir: Path) -> None:
    import pandas as pd

    table = pd.Series(metrics).to_frame("value")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"run directory: {output_dir} (oof.csv, metrics.json, plots)")


if __name__ == "__main__":
    main()
