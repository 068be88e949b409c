"""``ctvoco-segment`` end to end: train on a cohort's masked series, then predict every
series of the cache, resumably, with the model it was made by on record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctvoco.cache import VolumeCache

# a training run and three prediction runs of the installed program: about a minute
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
TINY = [
    "+experiment=demo_seg",
    "synthetic.n_patients=6",
    "synthetic.n_test=0",
    "synthetic.n_flare=0",
    "synthetic.shape=[16,64,64]",
    "synthetic.spacing=[20.0,5.5,5.5]",
    "+synthetic.segmented_fraction=1.0",
    "data.preprocess.shape=[12,48,48]",
    "data.num_workers=0",
    "data.preprocess_workers=0",
    "trainer.max_epochs=2",
]


def segment(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ctvoco-segment"), *args],
        cwd=cwd,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    result = segment(
        *TINY, f"synthetic.root={root / 'cohort'}", f"paths.output_dir={root / 'run'}", cwd=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_training_reports_dice_per_organ(trained):
    root, result = trained
    run = root / "run"
    record = json.loads((run / "dice.json").read_text())
    assert set(record["dice"]) == {
        "liver",
        "spleen",
        "left_kidney",
        "right_kidney",
        "bowel",
        "mean",
    }
    assert record["series"] and record["checkpoint"]
    assert (run / "segmentation.png").stat().st_size > 10_000
    assert "| liver |" in (run / "dice.md").read_text() and "| liver |" in result.stdout
    assert (run / "checkpoints" / "last.ckpt").exists()


def test_predict_writes_every_series_and_resumes(trained):
    root, _ = trained
    checkpoint = root / "run" / "checkpoints" / "last.ckpt"
    cache = VolumeCache(root / "cohort" / "cache" / "rsna")
    args = [*TINY, f"synthetic.root={root / 'cohort'}", f"checkpoint={checkpoint}"]
    first = segment("predict", *args, f"paths.output_dir={root / 'p1'}", cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    keys = cache.ready_keys()
    folder = cache.root / "predicted_masks"
    assert sorted(p.stem for p in folder.glob("*.npy")) == sorted(keys)
    mask = np.load(folder / f"{keys[0]}.npy")
    assert mask.shape == cache.load(keys[0]).shape and mask.dtype == np.uint8
    assert json.loads((folder / "model.json").read_text())["checkpoint"] == str(checkpoint)
    (folder / f"{keys[0]}.npy").unlink()  # as if a run had died before this one
    again = segment("predict", *args, f"paths.output_dir={root / 'p2'}", cwd=root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"1 series predicted, {len(keys) - 1} already done" in again.stdout


def test_predict_refuses_masks_of_another_model_and_needs_a_checkpoint(trained):
    root, _ = trained
    other = root / "other.ckpt"
    other.write_bytes(
        (root / "run" / "checkpoints" / "last.ckpt").read_bytes()
    )  # same bytes, another file
    base = [*TINY, f"synthetic.root={root / 'cohort'}"]
    refused = segment("predict", *base, f"checkpoint={other}", cwd=root)
    assert refused.returncode == 2
    assert "masks predicted by another model" in refused.stderr
    assert "restart=true" in refused.stderr
    missing = segment("predict", *base, cwd=root)
    assert missing.returncode == 2 and "checkpoint= is required" in missing.stderr
