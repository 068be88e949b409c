"""The shared entry-point convention: user mistakes exit 2 with one sentence, bugs keep tracebacks."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ctvoco.cli.app import hydra_app
from ctvoco.cli.components import check_targets, wandb_mode
from ctvoco.cli.jobs import child_command
from ctvoco.cli.run_setup import ensure_writable_dir
from ctvoco.cli.user_errors import EXIT_USER_ERROR, config_error_sentence
from ctvoco.errors import UserError


def run_app(task, argv: list[str], monkeypatch, tmp_path, config: str = "synth"):
    main = hydra_app(config)(task)
    monkeypatch.setattr(sys, "argv", ["ctvoco-test", f"paths.output_dir={tmp_path / 'run'}", *argv])
    return main()


def test_user_error_exits_2_with_one_line(monkeypatch, tmp_path, capsys) -> None:
    def task(cfg):
        raise UserError("data.root does not exist: /nowhere")

    with pytest.raises(SystemExit) as exc:
        run_app(task, [], monkeypatch, tmp_path)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "ctvoco-test: error: data.root does not exist: /nowhere"


def test_bad_override_exits_2(monkeypatch, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        run_app(lambda cfg: None, ["no_such_key=1"], monkeypatch, tmp_path)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no_such_key" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_config_option_exits_2(monkeypatch, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        run_app(lambda cfg: None, ["paths=nope"], monkeypatch, tmp_path)
    assert exc.value.code == 2
    assert "nope" in capsys.readouterr().err


def test_missing_mandatory_value_names_the_key(monkeypatch, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        run_app(lambda cfg: str(cfg.checkpoint), [], monkeypatch, tmp_path, config="predict")
    assert exc.value.code == 2
    assert "checkpoint" in capsys.readouterr().err


def test_missing_value_behind_an_interpolation_names_the_key(monkeypatch, tmp_path, capsys):
    # `init: voco:${pretrained}` with `pretrained: ???`, as in +experiment=rsna_voco.
    overrides = ["+pretrained=???", "+init=voco:${pretrained}"]
    with pytest.raises(SystemExit) as exc:
        run_app(lambda cfg: None, overrides, monkeypatch, tmp_path)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "ctvoco-test: error: pretrained is required but not set (init uses it); "
        "pass pretrained=... on the command line"
    )


@pytest.mark.parametrize("seed", ["abc", "1.5", "-1", "true"])
def test_bad_seed_is_a_user_error_naming_seed(seed, monkeypatch, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        run_app(lambda cfg: None, [f"seed={seed}"], monkeypatch, tmp_path)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.lower().startswith(f"ctvoco-test: error: seed={seed} ") and "\n" not in err


def test_seed_without_a_trainer_does_not_load_torch(tmp_path) -> None:
    code = (
        "import random, sys; from ctvoco.cli.run_setup import seed_everything; "
        "seed_everything(5, with_torch=False); a = random.random(); "
        "seed_everything(5, with_torch=False); assert random.random() == a; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"


def test_impossible_hydra_flags_exit_2_with_one_line(monkeypatch, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        run_app(lambda cfg: None, ["-m", "--cfg", "hydra"], monkeypatch, tmp_path)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--multirun" in err and "Traceback" not in err


def test_an_active_wandb_run_is_finished_after_the_task(monkeypatch, tmp_path) -> None:
    finished: list[int] = []
    fake = types.SimpleNamespace(
        run=object(), finish=lambda exit_code=0: finished.append(exit_code)
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run_app(lambda cfg: None, [], monkeypatch, tmp_path)
    assert finished == [0]

    def failing(cfg):
        raise UserError("bad data")

    with pytest.raises(SystemExit):
        run_app(failing, [], monkeypatch, tmp_path)
    assert finished == [0, 1], "a failed task marks its wandb run failed"


def test_bug_keeps_its_traceback(monkeypatch, tmp_path) -> None:
    def task(cfg):
        raise ZeroDivisionError("a real bug")

    with pytest.raises(ZeroDivisionError, match="a real bug"):
        run_app(task, [], monkeypatch, tmp_path)


def test_run_directory_and_resolved_config(monkeypatch, tmp_path) -> None:
    seen = {}

    def task(cfg):
        seen["output_dir"] = cfg.paths.output_dir
        seen["seed"] = cfg.seed

    run_app(task, ["seed=5"], monkeypatch, tmp_path)
    run = tmp_path / "run"
    assert seen == {"output_dir": str(run.resolve()), "seed": 5}
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.seed == 5 and saved.paths.output_dir == str(run.resolve())


def test_unwritable_output_dir_is_a_user_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"cannot write to .*file/sub.*paths\.output_dir"):
        ensure_writable_dir(blocker / "sub", "paths.output_dir")


def test_full_disk_is_caught_by_the_write_probe(tmp_path, monkeypatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    target = tmp_path / "run"
    with pytest.raises(UserError, match=r"cannot write to .*run \(No space left on device\); free"):
        ensure_writable_dir(target, "paths.output_dir")
    assert list(target.iterdir()) == [], "the probe file is removed"


def test_write_probe_writes_real_bytes(tmp_path, monkeypatch) -> None:
    written: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        written.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    ensure_writable_dir(tmp_path / "run", "paths.output_dir")
    assert written and all(written), "an empty probe succeeds even on a full disk"
    assert list((tmp_path / "run").iterdir()) == []


def test_importing_the_cli_layer_loads_neither_torch_nor_lightning() -> None:
    code = (
        "import sys, ctvoco.cli.app, ctvoco.cli.components, ctvoco.cli.training; "
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'lightning_fabric', "
        "'lightning') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_multirun_child_command_runs_one_job_in_its_directory() -> None:
    command = child_command(
        ["python", "script"],
        ["--config-dir", "mine"],
        ["data.fold=1", "+experiment=rsna", "paths.output_dir=elsewhere"],
        ["hydra.mode=MULTIRUN", "hydra.sweep.dir=sweeps", "hydra.verbose=true"],
        Path("/runs/sweep/1"),
    )
    assert command == [
        "python",
        "script",
        "--config-dir",
        "mine",
        "data.fold=1",
        "+experiment=rsna",
        "hydra.verbose=true",
        "paths.output_dir=/runs/sweep/1",
        "hydra.mode=RUN",
        "hydra.run.dir=/runs/sweep/1",
        "hydra.output_subdir=null",
    ]
    assert "-m" not in command and "--multirun" not in command
    quoted = child_command(["p"], [], [], [], Path("/runs/a b,c"))
    assert "paths.output_dir='/runs/a b,c'" in quoted


def test_config_error_sentence_is_one_line() -> None:
    class Cause(Exception):
        pass

    error = RuntimeError("Could not override 'x'.\nTo append to your config use +x=1")
    error.__cause__ = Cause("Key 'x' is not in struct\n    full_key: x\n    object_type=dict")
    sentence = config_error_sentence(error)
    assert "\n" not in sentence
    assert "full_key" not in sentence and "+x=1" in sentence


TARGET_CASES = [
    ({"_target_": "ctvoco.data.RSNADataModule"}, True),
    ({"_target_": "pytorch_lightning.Trainer"}, True),
    ({"a": {"_target_": "torch.optim.AdamW"}}, True),
    # any importable target; a section with a kind takes only classes of that kind
    ({"a": {"b": {"_target_": "subprocess.run"}}}, True),
    ({"data": {"_target_": "subprocess.Popen"}}, False),
    ({"callbacks": {"x": {"_target_": "builtins.dict"}}}, False),
    ({"trainer": {"_target_": "collections.OrderedDict"}}, False),
]


@pytest.mark.parametrize(("config", "allowed"), TARGET_CASES)
def test_targets_are_checked_for_their_sections_kind(config, allowed) -> None:
    if allowed:
        check_targets(OmegaConf.create(config))
    else:
        with pytest.raises(UserError, match=r"_target_=.* is not a"):
            check_targets(OmegaConf.create(config))


WANDB_CASES = [
    ({"WANDB_MODE": "disabled"}, "", "disabled"),
    ({"WANDB_MODE": "online"}, "", "online"),
    ({"WANDB_API_KEY": "k"}, "", "online"),
    ({}, "machine api.wandb.ai login user password secret\n", "online"),
    ({}, "", "offline"),
]


@pytest.mark.parametrize(("env", "netrc", "mode"), WANDB_CASES)
def test_wandb_mode(env, netrc, mode, tmp_path) -> None:
    path = tmp_path / "netrc"
    path.write_text(netrc)
    path.chmod(0o600)
    assert wandb_mode(environ=env, netrc_path=path) == mode


def _task_must_not_run(cfg) -> None:
    pytest.fail("the task started although the config has a value of the wrong type")


WRONG_TYPES = [
    ("finetune", ["trainer.max_steps=abc"], "trainer.max_steps=abc", "an integer"),
    (
        "finetune",
        ["model.module.scheduler.min_lr_ratio=abc"],
        "model.module.scheduler.min_lr_ratio=abc",
        "a number",
    ),
    ("finetune", ["data.batch_size=abc"], "data.batch_size=abc", "an integer"),
    ("finetune", ["data.fold=abc"], "data.fold=abc", "an integer or null"),
    ("finetune", ["trainer.max_steps=1.5"], "trainer.max_steps=1.5", "an integer"),
    (
        "pretrain",
        ["model.module.scheduler.min_lr_ratio=abc"],
        "model.module.scheduler.min_lr_ratio=abc",
        "a number",
    ),
    ("pretrain", ["trainer.enable_progress_bar=abc"], "trainer.enable_progress_bar=abc", "true"),
    ("preprocess", ["num_workers=abc"], "num_workers=abc", "an integer"),
    ("predict", ["checkpoint=a.ckpt", "input=x", "batch_size=abc"], "batch_size=abc", "an integer"),
    ("synth", ["n_patients=abc"], "n_patients=abc", "an integer"),
]


@pytest.mark.parametrize(("config", "overrides", "shown", "expected"), WRONG_TYPES)
def test_a_value_of_the_wrong_type_is_one_line_naming_key_value_and_type(
    config, overrides, shown, expected, monkeypatch, tmp_path, capsys
) -> None:
    with pytest.raises(SystemExit) as exc:
        run_app(_task_must_not_run, overrides, monkeypatch, tmp_path, config=config)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"ctvoco-test: error: {shown} is "), err
    assert f"must be {expected}" in err, err
    assert not (tmp_path / "run").exists(), "a command that failed left its run directory"


SHIPPED_CONFIGS = [
    ("preprocess", []),
    ("predict", ["checkpoint=a.ckpt", "input=x"]),
    ("synth", []),
    ("pretrain", []),
    ("finetune", []),
    ("pretrain", ["+experiment=demo_pretrain"]),
    ("pretrain", ["+experiment=flare"]),
    ("pretrain", ["+experiment=flare_rsna"]),
    ("pretrain", ["+experiment=rsna_pretrain"]),
    ("finetune", ["+experiment=demo_finetune"]),
    ("finetune", ["+experiment=rsna"]),
    ("finetune", ["+experiment=rsna_voco", "pretrained=export.pt"]),
    ("finetune", ["hparams_search=classifier_optuna"]),
]


@pytest.mark.parametrize(("config", "overrides"), SHIPPED_CONFIGS)
def test_shipped_configs_pass_the_type_check(config, overrides) -> None:
    from hydra import compose, initialize_config_module

    from ctvoco.cli.config_types import check_config_types

    with initialize_config_module("ctvoco.conf", version_base="1.3"):
        check_config_types(compose(config, overrides), config)


def test_a_failed_command_leaves_no_run_directory(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    main = hydra_app("predict")(lambda cfg: str(cfg.checkpoint))
    monkeypatch.setattr(sys, "argv", ["ctvoco-test"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert "checkpoint is required" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "the failed command left outputs/ behind"


def test_a_failure_keeps_a_run_directory_that_holds_earlier_work(monkeypatch, tmp_path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")

    def task(cfg):
        raise UserError("bad data")

    with pytest.raises(SystemExit):
        run_app(task, [], monkeypatch, tmp_path)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"weights"


def test_a_closed_stdout_ends_quietly(tmp_path) -> None:
    """``ctvoco-finetune --help | head -1``: the reader is gone before the help is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "ctvoco-finetune"), "--help"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr
    assert result.returncode != EXIT_USER_ERROR
    assert list(tmp_path.iterdir()) == []
