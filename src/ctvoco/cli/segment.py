"""``ctvoco-segment``: train the organ segmentation U-Net, or predict masks for a whole cache.

Examples::

    ctvoco-segment +experiment=rsna_seg data.root=/data/rsna
    ctvoco-segment predict checkpoint=<run>/checkpoints/last.ckpt data.cache_dir=/cache/rsna

Training reports the Dice of each organ on the held-out patients (``dice.json``,
``dice.md`` and ``segmentation.png`` in the run directory). ``predict`` writes the mask of
every series of the cache to ``<cache>/predicted_masks`` and resumes where a killed run
stopped. Torch and Lightning are imported inside the tasks only.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctvoco.cli.app import hydra_app
from ctvoco.errors import UserError

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

MODES = ("train", "predict")


@hydra_app("segment")
def run(cfg: DictConfig) -> dict[str, float]:
    """Train (``mode=train``) or predict (``mode=predict``)."""
    from ctvoco.errors import look_up_option

    look_up_option("mode", cfg.mode, MODES)
    return _predict(cfg) if cfg.mode == "predict" else _train(cfg)


def main() -> Any:
    """The console script: ``ctvoco-segment predict ...`` is ``ctvoco-segment mode=predict ...``."""
    if sys.argv[1:2] == ["predict"]:
        sys.argv[1:2] = ["mode=predict"]
    return run()


def _train(cfg: DictConfig) -> dict[str, float]:
    from ctvoco.cli.components import build, build_trainer
    from ctvoco.cli.training import make_synthetic_if_requested, resolve_ckpt_path
    from ctvoco.reports.segmentation import write_segmentation_report
    from ctvoco.training.history import MetricsHistory

    output_dir = Path(cfg.paths.output_dir)
    make_synthetic_if_requested(cfg)
    datamodule = build(cfg, "data")
    datamodule.check_inputs()
    module = build(cfg.model, "module", windows=datamodule.windows)
    module.hparams["cache_variant"] = datamodule.series.preprocess.fingerprint()
    history = MetricsHistory(output_dir, plot_groups=("loss", "dice"))
    trainer = build_trainer(cfg, extra_callbacks=[history])
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg), weights_only=True)
    if not datamodule.val_keys:
        log.info("no validation patients (data.val_share=0): no Dice to report")
        return {}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    trainer.validate(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
    if not trainer.is_global_zero:
        return {}
    report = write_segmentation_report(
        output_dir,
        dice_rows(module, datamodule),
        series=datamodule.val_keys,
        checkpoint=best,
        examples=_examples(module, datamodule),
    )
    print(report.read_text())
    print(f"run directory: {output_dir} (dice.json, dice.md, segmentation.png, checkpoints)")
    return {f"dice_{k}": float(v) for k, v in module.last_dice.items()}


def dice_rows(module: Any, datamodule: Any) -> dict[str, dict[str, float]]:
    """Per organ (and ``mean``): the validation Dice with its patient-bootstrap interval,
    and the atlas floor (each voxel's most frequent training label) with its interval."""
    import numpy as np
    import torch

    from ctvoco.segment.dice import (
        atlas_labels,
        dice_interval,
        organ_dice,
        overlap_counts,
        series_dice,
    )

    cache = datamodule.cache
    atlas = torch.from_numpy(
        atlas_labels(
            [np.asarray(cache.load_mask(k)) for k in datamodule.train_keys], module.num_classes
        )
    )
    floor_counts = {
        k: overlap_counts(
            atlas, torch.from_numpy(np.asarray(cache.load_mask(k))), module.num_classes
        )
        for k in datamodule.val_keys
    }
    rows: dict[str, dict[str, float]] = {}
    for name, counts in (("dice", module.last_counts), ("floor", floor_counts)):
        values = organ_dice(counts, module.organs)
        keys, per_series = series_dice(counts)
        patients = [str((cache.record(k) or {}).get("patient_id") or k) for k in keys]
        low, high = dice_interval(per_series, patients)
        columns = {organ: label - 1 for organ, label in module.organs.items()}
        for organ, j in {**columns, "mean": -1}.items():
            row = rows.setdefault(organ, {})
            row[name], row[f"{name}_low"], row[f"{name}_high"] = values[organ], low[j], high[j]
    return rows


def _examples(module: Any, datamodule: Any) -> list[tuple[str, Any, Any, Any]]:
    """The slice with most organ voxels of up to three validation series: its key, image,
    mask and prediction."""
    import numpy as np

    from ctvoco.segment.predict import predict_series

    module.eval()
    examples = []
    for key in datamodule.val_keys[:3]:
        volume = np.asarray(datamodule.cache.load(key))
        mask = np.asarray(datamodule.cache.load_mask(key))
        k = int(np.argmax((mask > 0).sum(axis=(1, 2))))
        pred = predict_series(module.net, volume, context=int(module.hparams.context))
        image = volume[k] if volume.ndim == 3 else volume[0, k]
        examples.append((key, image, mask[k], pred[k]))
    return examples


def _predict(cfg: DictConfig) -> dict[str, float]:
    import torch
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ctvoco.cli.components import build
    from ctvoco.segment.module import OrganSegmenter
    from ctvoco.segment.predict import predict_cache

    if not cfg.get("checkpoint"):
        raise UserError(
            "checkpoint= is required for ctvoco-segment predict (a checkpoint of a "
            "ctvoco-segment run, e.g. <run>/checkpoints/last.ckpt)"
        )
    path = Path(str(cfg.checkpoint))
    if not path.is_file():
        raise UserError(f"checkpoint={path}: no such file")
    datamodule = build(cfg, "data")
    datamodule.check_inputs()
    datamodule.prepare_data()
    # the encoder's initial weights are in the checkpoint: do not read the export again
    module = OrganSegmenter.load_from_checkpoint(
        path, map_location="cpu", init="random", weights_dir=None, weights_only=True
    )
    if module.in_chans != datamodule.windows * (2 * module.hparams.context + 1):
        raise UserError(
            f"checkpoint={path} reads {module.in_chans} channels; the cache at "
            f"{datamodule.cache.root} has {datamodule.windows} window(s) "
            f"(data.preprocess.windows must be the ones it was trained with)"
        )
    trained = module.hparams.get("cache_variant")
    if trained and trained != datamodule.cache.variant():
        log.warning(
            "checkpoint=%s was trained on another preprocessing (%s) than the cache at %s (%s)",
            path,
            trained,
            datamodule.cache.root,
            datamodule.cache.variant(),
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = module.net.to(device).eval()
    keys = datamodule.cache.ready_keys()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = {"checkpoint": str(path.resolve()), "sha256": digest}
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]predict masks"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("masks", total=len(keys))
        done = predict_cache(
            net,
            datamodule.cache.root,
            model,
            context=int(module.hparams.context),
            keys=keys,
            batch_size=int(cfg.predict_batch_size),
            restart=bool(cfg.restart),
            advance=lambda _key: bar.advance(task),
        )
    folder = datamodule.cache.root / "predicted_masks"
    print(
        f"predicted masks: {len(done)} series predicted, {len(keys) - len(done)} already done, "
        f"in {folder}"
    )
    return {"predicted": float(len(done))}


if __name__ == "__main__":
    main()
