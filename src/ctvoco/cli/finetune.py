"""``ctvoco-finetune``: train the CNN-LSTM injury classifier on one fold and evaluate it.

Examples::

    ctvoco-finetune +experiment=rsna data.root=/data/rsna data.fold=0
    ctvoco-finetune -m +experiment=rsna data.root=/data/rsna data.fold=0,1,2,3,4
    ctvoco-cv-report outputs/finetune/multiruns/<date>
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from ctvoco.cli.app import hydra_app
from ctvoco.cli.components import build, build_trainer
from ctvoco.cli.training import (
    build_datamodule,
    make_synthetic_if_requested,
    resolve_ckpt_path,
    without_augmentation,
)
from ctvoco.reports.evaluation import write_evaluation
from ctvoco.training.history import MetricsHistory
from ctvoco.training.resume import RNGState

log = logging.getLogger(__name__)


@hydra_app("finetune")
def main(cfg: DictConfig) -> dict[str, float]:
    """Train one fold, then evaluate the best checkpoint on the fold and write the reports."""
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
    _log_images(trainer, output_dir)
    return metrics


def _print_metrics(metrics: dict[str, float], output_dir: Path) -> None:
    table = pd.Series(metrics).to_frame("value")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"run directory: {output_dir} (oof.csv, metrics.json, plots)")


def _log_images(trainer, output_dir: Path) -> None:
    """Send the evaluation plots to wandb when it is the logger."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            images = sorted(str(p) for p in output_dir.glob("*.png"))
            logger.log_image(
                key="evaluation", images=images, caption=[Path(p).stem for p in images]
            )


if __name__ == "__main__":
    main()
