"""The evaluation plots also go to TensorBoard (:func:`ctvoco.reports.evaluation.log_evaluation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ctvoco.reports.evaluation import log_evaluation


class FakeWriter:
    def __init__(self) -> None:
        self.images: list[dict[str, Any]] = []

    def add_image(self, tag: str, image: np.ndarray, global_step: int | None = None, **kw: Any):
        self.images.append({"tag": tag, "shape": image.shape, "step": global_step, **kw})


class TensorBoardLogger:
    """Records what is logged; named like Lightning's logger, which is how it is found."""

    def __init__(self) -> None:
        self.experiment = FakeWriter()


def test_evaluation_plots_go_to_tensorboard(tmp_path: Path) -> None:
    for name, size in (("roc", (30, 20)), ("confusion", (40, 10))):
        Image.new("RGBA", size).save(tmp_path / f"{name}.png")
    logger = TensorBoardLogger()
    log_evaluation([logger], tmp_path, {"score": 0.4})
    assert logger.experiment.images == [
        {"tag": "evaluation/confusion", "shape": (10, 40, 3), "step": None, "dataformats": "HWC"},
        {"tag": "evaluation/roc", "shape": (20, 30, 3), "step": None, "dataformats": "HWC"},
    ]
