"""Write the pretrained student backbone at the end of a run (the checkpoint contract)."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from ctvoco.io.atomic import torch_save_atomic, write_text_atomic
from ctvoco.models.checkpoints import export_state_dict


class BackboneExport(pl.Callback):
    """At the end of ``fit``, save ``<dir>/<backbone>.pt`` loadable by plain timm (strict).

    The weights and their ``.json`` description are written atomically: a failed write
    leaves the previous export (or none), never a partial file.

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
        exported = export_state_dict(
            {k: v.cpu() for k, v in state.items()}, hp.backbone, hp.in_chans
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{hp.backbone}.pt"
        torch_save_atomic(exported, path)
        meta = {
            "backbone": hp.backbone,
            "in_chans": hp.in_chans,
            "global_step": trainer.global_step,
            "usage": f"timm.create_model('{hp.backbone}', in_chans={hp.in_chans}).load_state_dict(torch.load(path, weights_only=True))",
        }
        write_text_atomic(path.with_suffix(".json"), json.dumps(meta, indent=2))
        self.path = path
