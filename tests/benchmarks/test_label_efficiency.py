"""The label-efficiency study's bookkeeping: which runs it reuses, resumes or starts again,
and how it summarises them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.benchmarks.test_scripts import load_script

study = load_script("label_efficiency")
PROTOCOL = ["+experiment=demo_finetune", "data.train_fraction=0.1", "trainer.max_steps=900"]


def test_new_run_records_its_settings(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert study.prepare_run(run_dir, PROTOCOL) is False
    assert study.protocol_matches(run_dir, PROTOCOL)


def test_finished_run_with_the_same_settings_is_reused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    study.prepare_run(run_dir, PROTOCOL)
    (run_dir / "metrics.json").write_text("{}")
    assert study.prepare_run(run_dir, PROTOCOL) is True
    assert (run_dir / "metrics.json").exists()


def test_interrupted_run_is_kept_to_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    study.prepare_run(run_dir, PROTOCOL)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"state")
    assert study.prepare_run(run_dir, PROTOCOL) is False
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


def test_run_made_with_other_settings_starts_again(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    study.prepare_run(run_dir, PROTOCOL)
    (run_dir / "metrics.json").write_text("{}")
    other = [*PROTOCOL[:-1], "trainer.max_steps=1800"]
    assert study.prepare_run(run_dir, other) is False
    assert not (run_dir / "metrics.json").exists()
    assert study.protocol_matches(run_dir, other)


def test_run_without_recorded_settings_starts_again(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text("{}")
    assert study.prepare_run(run_dir, PROTOCOL) is False
    assert not (run_dir / "metrics.json").exists()


def test_early_stopping_is_part_of_the_settings(tmp_path: Path) -> None:
    args = study.argparse.Namespace(
        steps=900, val_every=100, patience=4, overrides=[], jobs=2, pretrain_epochs=1
    )
    stopped = study.finetune_protocol(tmp_path, 0.25, "voco", 1, tmp_path / "b.pt", args)
    assert "callbacks=[default,early_stopping]" in stopped
    assert "callbacks.early_stopping.patience=4" in stopped
    assert f"model.module.init=voco:{tmp_path / 'b.pt'}" in stopped
    args.patience = 0
    full = study.finetune_protocol(tmp_path, 0.25, "scratch", 1, tmp_path / "b.pt", args)
    assert not any(o.startswith("callbacks") for o in full)
    assert "model.module.init=random" in full
    assert not any(o.startswith("--") for o in stopped + full)


def test_selected_step_from_the_checkpoint_name() -> None:
    assert study.selected_step(Path("best-epoch049-step0000150.ckpt")) == 150


def test_summary_is_mean_and_std_over_seeds() -> None:
    losses = dict.fromkeys(study.SCORE_COLUMNS, 0.5)
    results = pd.DataFrame(
        [
            {
                "fraction": 0.1,
                "init": "voco",
                "seed": s,
                "labelled_patients": 10,
                "score": score,
                **losses,
            }
            for s, score in enumerate([0.8, 1.0, 1.2])
        ]
    )
    summary = study.summarise(results)
    row = summary.iloc[0]
    assert row["score_mean"] == 1.0 and abs(row["score_std"] - 0.2) < 1e-12
    assert row["seeds"] == 3 and row["labelled_patients"] == 10
    table = study.markdown(summary, baseline=1.25)
    assert "| 10% (10) | voco | 1.000 ± 0.200 |" in table
    assert "1.250" in table
