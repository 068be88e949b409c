"""Write the pretrained student backbone at the end of a run (the checkpoint contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from ctvoco.models.checkpoints import write_backbone_export


class BackboneExport(pl.Callback):
    """At the end of ``fit``, save ``<dir>/<backbone>.pt`` loadable by plain timm (strict).

    The weights and their ``.json`` description are written atomically by
    :func:`~ctvoco.models.checkpoints.write_backbone_export`: a failed write leaves the
    previous export (or none), never a partial file.

    Args:
        directory: Output folder (``<run dir>/export``).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path: Path | None = None

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hp = pl_module.hparams
        state = pl_module.student_encoder.backbone.state_dict()
        meta: dict[str, Any] = {"global_step": trainer.global_step}
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:  # which RSNA patients pretraining saw (for finetuning)
            meta["rsna_patients"] = rsna_patients_record(datamodule)
        self.path = write_backbone_export(
            {k: v.cpu() for k, v in state.items()},
            hp.backbone,
            hp.in_chans,
            self.directory / f"{hp.backbone}.pt",
            **meta,
        )


def rsna_patients_record(datamodule: Any) -> dict[str, Any] | None:
    """Which RSNA folds pretraining kept out, for the finetuning runs to check.

    Args:
        datamodule: The pretraining data module: an RSNA one, or one with ``members``.

    Returns:
        ``{"exclude_folds", "n_folds", "fold_seed"}`` of the RSNA data, or ``None`` when
        pretraining saw no RSNA patient.
    """
    members = getattr(datamodule, "members", None)
    modules = list(members.values()) if isinstance(members, dict) else [datamodule]
    for module in modules:
        if hasattr(module, "exclude_folds") and hasattr(module, "n_folds"):
            return {
                "exclude_folds": sorted(int(f) for f in module.exclude_folds),
                "n_folds": int(module.n_folds),
                "fold_seed": int(module.fold_seed),
            }
    return None
