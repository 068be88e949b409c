"""``ctvoco-study`` end to end on a tiny RSNA-layout cohort, and its argument errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ctvoco.study.main import main

STUDY = str(Path(sys.executable).parent / "ctvoco-study")
TINY = [
    "--backbone", "test_efficientnet", "--fractions", "1.0", "--seeds", "0", "1",
    "--pretrain-seeds", "0", "--steps", "4", "--val-every", "2", "--patience", "0",
    "--jobs", "2", "--resamples", "200",
    "--set", "trainer=cpu", "--set", "data.num_workers=0", "--set", "data.batch_size=2",
    "--pretrain-set", "trainer.max_steps=4", "--pretrain-set", "model.views.crop_size=16",
    "--pretrain-set", "model.views.depth=16", "--pretrain-set", "model.views.num_slices=4",
    "--pretrain-set", "data.members.rsna.preprocess.shape=[16,64,64]",
    "--pretrain-set", "data.members.flare.preprocess.shape=[16,64,64]",
    "--finetune-set", "data.preprocess.shape=[16,64,64]",
    "--finetune-set", "model.views.num_slices=8", "--finetune-set", "model.views.crop=48",
]  # fmt: skip


def study(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [STUDY, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900
    )


@pytest.mark.slow
def test_the_four_arms_on_rsna_layout_data_end_to_end(tiny_cohort, tmp_path: Path) -> None:
    import timm
    import torch

    weights = tmp_path / "downloaded.pth"  # any name: linked as <backbone>.pth
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    out = tmp_path / "study"
    command = [
        "--data", "rsna", "--root", str(tiny_cohort.rsna_root),
        "--flare-root", str(tiny_cohort.flare_root), "--out", str(out),
        "--pretrained", str(weights), *TINY,
    ]  # fmt: skip
    first = study(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["arm"].unique()) == ["imagenet", "imagenet+voco", "scratch", "voco"]
    assert len(results) == 8 and results["score"].notna().all()
    differences = pd.read_csv(out / "differences.csv")
    assert list(differences["treatment"]) == ["voco", "imagenet+voco", "imagenet"]
    assert set(pd.read_csv(out / "floors.csv")["floor"]) == {"prevalence", "constant"}
    summary = (out / "summary.md").read_text()
    assert "best constant" in summary and "MDE" in summary and "no early stopping" in summary
    assert (out / "label_efficiency.png").stat().st_size > 10_000
    evaluated = json.loads((out / "protocol.json").read_text())["evaluated_patients"]
    assert evaluated["count"] == len(pd.read_csv(out / "heldout" / "labels.csv")) > 0
    for run in [*(out / "runs").iterdir(), *(out / "pretrain").iterdir()]:
        if run.is_dir():
            done = json.loads((run / "study-done.json").read_text())
            assert done["evaluated_seen"] == 0
            protocol = json.loads((run / "protocol.json").read_text())
            assert protocol["evaluated_patients"] == evaluated
    pretrain_cfg = (out / "pretrain" / "voco_from_imagenet_seed0" / "config.yaml").read_text()
    assert "init: imagenet" in pretrain_cfg
    again = study(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert " start " not in again.stdout  # every run reused
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), results)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "rsna"], "--data rsna needs --root"),
        (["--root", "somewhere"], "--root is for --data rsna"),
        (
            ["--arms", "imagenet"],
            "--arms imagenet: no local ImageNet weights for test_efficientnet",
        ),
        (["--fractions", "2"], r"--fractions must be in (0, 1]"),
    ],
)
def test_argument_errors_name_the_option(argv, message, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CTVOCO_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "out"), *argv])
    assert message in str(stop.value)
    assert not (tmp_path / "out" / "runs").exists()
