"""``ctvoco-pretrain``: VoCo pretraining of a timm backbone on CT volumes.

Examples::

    ctvoco-pretrain +experiment=flare data.root=/data/FLARE23
    ctvoco-pretrain +experiment=rsna_pretrain data.root=/data/rsna data.exclude_folds=[0]
    ctvoco-pretrain +experiment=demo_pretrain

Preprocessing workers started while the cache is built import this module again (it is the
program's main module), so torch and Lightning are imported inside :func:`main` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ctvoco.cli.app import hydra_app

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from ctvoco.voco.export import BackboneExport


@hydra_app("pretrain")
def main(cfg: DictConfig) -> dict[str, float | None]:
    """Pretrain, export the backbone, and report whether positions were learned."""
    from ctvoco.cli.components import build_model_with_views, build_trainer
    from ctvoco.cli.training import (
        build_datamodule,
        make_synthetic_if_requested,
        metric,
        resolve_ckpt_path,
    )
    from ctvoco.training.history import MetricsHistory
    from ctvoco.training.resume import RNGState
    from ctvoco.voco.export import BackboneExport

    output_dir = Path(cfg.paths.output_dir)
    make_synthetic_if_requested(cfg)
    # first: a bad backbone name fails before any data work
    views, module = build_model_with_views(cfg)
    datamodule = build_datamodule(cfg, "pretrain", views, views.for_eval())
    history = MetricsHistory(output_dir, plot_groups=("loss", "intra", "position_mae"))
    callbacks = [history, RNGState()]
    export = BackboneExport(output_dir / "export") if cfg.get("export_backbone", True) else None
    if export is not None:
        callbacks.append(export)
    trainer = build_trainer(cfg, extra_callbacks=callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg), weights_only=True)
    result = {
        "position_mae": metric(trainer, "val/position_mae"),
        "position_mae_baseline": metric(trainer, "val/position_mae_baseline"),
        "position_mae_trivial": metric(trainer, "val/position_mae_trivial"),
        "position_rank_corr": metric(trainer, "val/position_rank_corr"),
        "position_rank_corr_baseline": metric(trainer, "val/position_rank_corr_baseline"),
    }
    if trainer.is_global_zero:
        _report(result, output_dir, export)
    return result


def _report(
    result: dict[str, float | None], output_dir: Path, export: BackboneExport | None
) -> None:
    mae, baseline = result["position_mae"], result["position_mae_baseline"]
    corr, corr_baseline = result["position_rank_corr"], result["position_rank_corr_baseline"]
    if mae is not None and baseline is not None:
        learned = mae < 0.8 * baseline and (corr_baseline is None or (corr or 0) > corr_baseline)
        verdict = "learned position" if learned else "not (yet) better than geometry alone"
        print(
            f"position MAE {mae:.4f} vs {baseline:.4f} for the best image-blind predictor; "
            f"rank corr {corr:.3f} vs {corr_baseline or float('nan'):.3f}: {verdict}"
        )
    print(f"run directory: {output_dir}")
    if export is not None and export.path is not None:
        print(f"exported backbone: {export.path}")


if __name__ == "__main__":
    main()
