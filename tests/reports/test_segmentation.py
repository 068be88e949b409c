"""Tests for ctvoco.reports.segmentation: the Dice table and the example slices."""

from __future__ import annotations

import json

import numpy as np

from ctvoco.reports.segmentation import write_segmentation_report

NAN = float("nan")


def row(dice, low, high, floor=0.1, floor_low=0.05, floor_high=0.2):
    return {
        "dice": dice,
        "dice_low": low,
        "dice_high": high,
        "floor": floor,
        "floor_low": floor_low,
        "floor_high": floor_high,
    }


DICE = {
    "liver": row(0.91234, 0.88, 0.94),
    "spleen": row(0.5, 0.4, 0.6),
    "left_kidney": row(NAN, NAN, NAN, NAN, NAN, NAN),
    "right_kidney": row(0.25, 0.1, 0.3),
    "bowel": row(0.0, 0.0, 0.0),
    "mean": row(0.4156, 0.35, 0.45),
}


def test_report_files(tmp_path):
    image = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[10:20, 5:25] = 1
    pred = np.roll(mask, 3, axis=1)
    path = write_segmentation_report(
        tmp_path,
        DICE,
        series=["1_2", "3_4"],
        checkpoint="/runs/x/checkpoints/best-epoch001.ckpt",
        examples=[("1_2", image, mask, pred)],
    )
    text = path.read_text()
    assert "on 2 validation series (checkpoint best-epoch001.ckpt)" in text
    assert "| liver | 0.912 [0.880, 0.940] | 0.100 [0.050, 0.200] |" in text
    assert "| left kidney | - | - |" in text
    record = json.loads((tmp_path / "dice.json").read_text())
    assert record["dice"]["left_kidney"]["dice"] is None
    assert record["dice"]["liver"]["dice"] == 0.9123
    assert record["series"] == ["1_2", "3_4"]
    assert (tmp_path / "segmentation.png").stat().st_size > 5_000


def test_without_examples_no_figure(tmp_path):
    write_segmentation_report(tmp_path, DICE, series=["1_2"], checkpoint=None)
    assert "final weights" in (tmp_path / "dice.md").read_text()
    assert not (tmp_path / "segmentation.png").exists()
