"""The installed console scripts: config search path, error convention, user config dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("script", ["ctvoco-pretrain", "ctvoco-predict"])
def test_scripts_find_packaged_configs(script: str, tmp_path: Path) -> None:
    result = run(script, "--info", "searchpath", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pkg://ctvoco.conf" in result.stdout


def test_flare_without_data_says_where_and_how(tmp_path: Path) -> None:
    result = run(
        "ctvoco-pretrain", "+experiment=flare", f"paths.output_dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()[-1]
    assert (
        "FLARE23 data not found" in err
        and "data.root" in err
        and "flare23.grand-challenge.org" in err
    )
    assert "Traceback" not in result.stderr


def test_bad_override_and_unknown_backbone(tmp_path: Path) -> None:
    bad = run("ctvoco-finetune", "trainer.bogus=1", cwd=tmp_path)
    assert bad.returncode == 2 and "bogus" in bad.stderr and "Traceback" not in bad.stderr
    unknown = run(
        "ctvoco-pretrain",
        "data=flare",
        f"data.root={tmp_path}",
        "model.module.backbone=no_such_net",
        f"paths.output_dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert unknown.returncode == 2
    assert "unknown timm backbone 'no_such_net'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_experiment_without_its_required_value_names_the_key(tmp_path: Path) -> None:
    result = run(
        "ctvoco-finetune",
        "+experiment=rsna_voco",
        f"paths.output_dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ctvoco-finetune: error: pretrained is required but not set")
    assert "pretrained=..." in line


def test_user_config_dir_adds_an_experiment(tmp_path: Path) -> None:
    user = tmp_path / "my_configs" / "experiment"
    user.mkdir(parents=True)
    (user / "mine.yaml").write_text("# @package _global_\nseed: 77\ntags: [mine]\n")
    result = run(
        "ctvoco-pretrain",
        "--config-dir",
        str(tmp_path / "my_configs"),
        "--cfg",
        "job",
        "--resolve",
        "+experiment=mine",
        f"paths.output_dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "seed: 77" in result.stdout and "- mine" in result.stdout


def test_info_reports_versions(tmp_path: Path) -> None:
    version = run("ctvoco-info", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip()
    report = run("ctvoco-info", cwd=tmp_path)
    assert "torch" in report.stdout and "CUDA available" in report.stdout


@pytest.mark.parametrize(
    "program", ["preprocess", "pretrain", "finetune", "predict", "synth", "segment"]
)
def test_program_modules_import_no_torch(program: str) -> None:
    """Preprocessing workers re-import the program's module (it is the main module of the
    console script), so it must leave torch and Lightning to ``main()``."""
    code = (
        f"import sys, ctvoco.cli.{program}; "
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'lightning_fabric') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def assert_one_error_line(result: subprocess.CompletedProcess[str], script: str) -> str:
    """Exit status 2, one line on stderr, no traceback; returns the message after the prefix."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = result.stderr.strip().splitlines()
    prefix = f"{script}: error: "
    assert line.startswith(prefix), line
    return line.removeprefix(prefix)


@pytest.mark.parametrize(
    ("script", "override", "expected"),
    [
        ("ctvoco-finetune", "trainer.max_steps=abc", "must be an integer"),
        ("ctvoco-preprocess", "num_workers=abc", "must be an integer"),
    ],
)
def test_wrong_type_override_is_one_line(script, override, expected, tmp_path: Path) -> None:
    message = assert_one_error_line(run(script, override, cwd=tmp_path), script)
    assert message.startswith(f"{override} is a string; ") and expected in message, message
    assert list(tmp_path.iterdir()) == [], "the failed command left a run directory"


@pytest.mark.parametrize(
    ("script", "override", "key"),
    [
        (
            "ctvoco-finetune",
            "model.module.optimizer.lr=-0.001",
            "model.module.optimizer.lr=-0.001",
        ),
        (
            "ctvoco-finetune",
            "model.module.optimizer.weight_decay=-1",
            "model.module.optimizer.weight_decay=-1",
        ),
        ("ctvoco-pretrain", "model.module.optimizer.lr=0", "model.module.optimizer.lr=0"),
    ],
)
def test_bad_optimiser_setting_stops_before_any_work(script, override, key, tmp_path: Path):
    # No data exists here: the check must come before the data is looked at.
    message = assert_one_error_line(run(script, override, cwd=tmp_path), script)
    assert message.startswith(key), message
    assert list(tmp_path.iterdir()) == [], "the failed command left a run directory"


def test_train_csv_without_rows_is_one_line(tiny_cohort, tmp_path: Path) -> None:
    labels = tmp_path / "train.csv"
    header = (tiny_cohort.rsna_root / "train.csv").read_text().splitlines()[0]
    labels.write_text(header + "\n")
    result = run(
        "ctvoco-finetune",
        f"data.root={tiny_cohort.rsna_root}",
        f"data.labels_csv={labels}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / 'run'}",
        "model.module.backbone=test_efficientnet",
        "logger=none",
        cwd=tmp_path,
    )
    message = assert_one_error_line(result, "ctvoco-finetune")
    assert str(labels) in message and "no patients" in message, message


def test_missing_argument_leaves_no_run_directory(tmp_path: Path) -> None:
    message = assert_one_error_line(
        run("ctvoco-predict", "input=x", cwd=tmp_path), "ctvoco-predict"
    )
    assert message.startswith("checkpoint is required"), message
    assert list(tmp_path.iterdir()) == [], "the failed command left outputs/ behind"
