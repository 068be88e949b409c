"""`--help` of each program: what it does, its main keys, an example, only its own groups."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from ctvoco.cli import info

BIN = Path(sys.executable).parent

HELP = {
    # program: (its description, its example, groups it lists, groups it must not list)
    "pretrain": (
        "VoCo self-supervised pretraining",
        "ctvoco-pretrain +experiment=demo_pretrain",
        {"data", "model", "trainer", "experiment", "schedule"},
        set(),
    ),
    "finetune": (
        "train the CNN-LSTM injury classifier",
        "ctvoco-finetune +experiment=demo_finetune",
        {"data", "model", "trainer", "callbacks", "logger", "experiment", "hparams_search"},
        {"schedule"},
    ),
    "predict": (
        "a Kaggle submission",
        "ctvoco-predict checkpoint=",
        {"paths"},
        {"trainer", "experiment", "hparams_search", "model", "data", "logger", "callbacks"},
    ),
    "preprocess": (
        "fill the volume cache",
        "ctvoco-preprocess data=rsna",
        {"data", "paths"},
        {"trainer", "experiment", "hparams_search", "model", "logger"},
    ),
    "segment": (
        "train an organ segmentation U-Net",
        "ctvoco-segment +experiment=demo_seg",
        {"data", "model", "trainer", "callbacks", "logger", "experiment"},
        {"schedule", "hparams_search"},
    ),
    "synth": (
        "write a synthetic cohort",
        "ctvoco-synth root=",
        {"paths"},
        {"trainer", "experiment", "hparams_search", "model", "data"},
    ),
}


def program_help(program: str, *args: str) -> str:
    """The standard output of ``ctvoco-<program> --help``."""
    result = subprocess.run(
        [str(BIN / f"ctvoco-{program}"), *args, "--help"],
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def listed_groups(text: str) -> dict[str, list[str]]:
    """``group -> options`` of the help's config-group section."""
    section = text.split("== Config groups ==", 1)[1].split("== Config ==", 1)[0]
    found = re.findall(r"^([\w/]+): ([^\n]+?)(?:\s+\(.*\))?$", section, flags=re.MULTILINE)
    return {group: options.split(", ") for group, options in found}


@pytest.mark.parametrize("program", sorted(HELP))
def test_help_explains_the_program_and_lists_only_its_groups(program: str) -> None:
    description, example, used, unused = HELP[program]
    text = program_help(program)
    assert text.startswith(f"ctvoco-{program}: "), text[:200]
    head = text.split("== Config groups ==")[0]
    assert description in head and "Main keys:" in head and "Example" in head
    assert example in head
    groups = listed_groups(text)
    assert used <= set(groups), sorted(groups)
    assert not unused & set(groups), sorted(groups)
    assert not any(g.startswith("hydra") for g in groups)
    if program == "finetune":
        assert {"rsna", "rsna_voco", "demo_finetune"} <= set(groups["experiment"])
        assert not {"flare", "flare_rsna", "rsna_pretrain", "demo_pretrain"} & set(
            groups["experiment"]
        )
        assert groups["model"] == ["classifier"]
    if program == "pretrain":
        assert "flare" in groups["experiment"] and "rsna" not in groups["experiment"]


def test_help_lists_an_experiment_of_the_users_config_dir(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "my_rsna.yaml").write_text(
        "# @package _global_\ndefaults:\n  - rsna\nseed: 7\n"
    )
    groups = listed_groups(program_help("finetune", "--config-dir", str(tmp_path)))
    assert "my_rsna" in groups["experiment"]


def test_help_texts_compose_into_the_programs_config() -> None:
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        for program in HELP:
            cfg = compose(
                program,
                overrides=["checkpoint=a", "input=b"] if program == "predict" else [],
                return_hydra_config=True,
            )
            assert cfg.hydra.help.header.startswith(f"ctvoco-{program}: ")
            assert "$" not in cfg.hydra.help.header  # the template is a string.Template


def test_info_help_says_what_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        info.main(["--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "environment report" in out and "--version" in out
