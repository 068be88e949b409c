"""The one entry-point convention shared by every ``ctvoco-*`` console script.

Each command is a Hydra app whose configs ship inside the package (``pkg://ctvoco.conf``).
:func:`hydra_app` wraps a task function ``task(cfg) -> None`` so that every command:

- resolves its run directory (``paths.output_dir``) and writes the resolved config there;
- seeds Python, NumPy and torch from the top-level ``seed``;
- checks the type of every value a ``_target_``'s constructor (or the program) reads, and
  leaves no run directory behind when it stops on a user mistake before any work
  (:mod:`ctvoco.cli.run_setup`, :mod:`ctvoco.cli.config_types`);
- runs every job of a multirun (``-m``) in a child process of its own, one after another,
  and hands the job's result (``optimized_metric`` of it, for Optuna) back to the sweeper
  (the ``ctvoco_process`` launcher, :mod:`ctvoco.cli.jobs`);
- reports a *user mistake* (bad override, unknown config option, a required value left
  unset, missing data, a :class:`~ctvoco.errors.UserError` raised anywhere, a trainer
  option Lightning rejects) as one sentence on stderr and exits with status 2, without a
  traceback (:mod:`ctvoco.cli.user_errors`);
- lets a *bug* surface with its full traceback (exit status 1);
- ends quietly when its standard output is a pipe that was closed (``... --help | head -1``).

Importing this module imports neither torch nor Lightning; they load when a task needs them.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ctvoco.cli.jobs import RESULT_ENV, JobFailed, job_value, write_result
from ctvoco.cli.run_setup import discard_run_dir, prepare_run
from ctvoco.cli.user_errors import (
    config_error_sentence,
    exit_user_error,
    program_name,
    user_error_message,
)
from ctvoco.errors import UserError

CONFIG_PATH = "pkg://ctvoco.conf"
EXIT_BROKEN_PIPE = 128 + 13
"""The exit status of a command whose standard output was closed (as a shell reports SIGPIPE)."""

Task = Callable[[DictConfig], Any]


def hydra_app(config_name: str) -> Callable[[Task], Callable[[], Any]]:
    """Turn ``task(cfg)`` into a console-script ``main()`` following the ctvoco conventions.

    Args:
        config_name: Top-level config in ``ctvoco.conf`` (``"pretrain"``, ``"finetune"``, ...).

    Returns:
        A decorator; the decorated function is the console script's ``main``.
    """

    def decorator(task: Task) -> Callable[[], Any]:
        # in_task: the task function started (later errors are not composition errors);
        # started: when the command started (what a failed run wrote is newer).
        state: dict[str, Any] = {"in_task": False, "started": time.time()}

        @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
        def hydra_main(cfg: DictConfig) -> Any:
            state["in_task"] = True
            return run_task(task, cfg, config_name, state["started"])

        @functools.wraps(task)
        def main() -> Any:
            os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # exceptions reach us unaltered
            state["started"] = time.time()
            try:
                return hydra_main()
            except Exception as exc:
                report_command_error(exc, program_name(config_name), in_task=state["in_task"])

        main.hydra_main = hydra_main  # type: ignore[attr-defined]
        return main

    return decorator


def run_task(task: Task, cfg: DictConfig, config_name: str, started: float) -> Any:
    """Prepare the run, call ``task(cfg)`` and hand back what it returned.

    In a multirun job's child (:data:`~ctvoco.cli.jobs.RESULT_ENV` set) the result is also
    written for the sweep process; in a job that a launcher runs in the sweep's own
    process, the job's ``optimized_metric`` value is returned instead.

    Raises:
        SystemExit: 2 on a user mistake, after its one-sentence message.
    """
    prog = program_name(config_name)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    # Taken out of the environment, so that no program this task starts writes there too.
    result_file = os.environ.pop(RESULT_ENV, None)
    try:
        prepare_run(cfg, config_name)
        result = task(cfg)
    except Exception as exc:
        finish_wandb(exit_code=1)
        message = user_error_message(exc)
        if message is None:
            raise
        if result_file is None and not in_sweep:  # a job's directory belongs to its sweep
            discard_run_dir(Path(HydraConfig.get().runtime.output_dir), started)
        # Exit here: past this point Hydra would add its own "Error executing job" line.
        exit_user_error(prog, message)
    finish_wandb()
    if result_file is not None:
        write_result(Path(result_file), result)
    if in_sweep:
        return job_value(result, cfg.get("optimized_metric"))
    return result


def report_command_error(exc: Exception, prog: str, in_task: bool) -> NoReturn:
    """End the command on ``exc``: one sentence for a user mistake, the traceback for a bug.

    Args:
        exc: What stopped the command.
        prog: The program's name.
        in_task: Whether the task had started (a later Hydra or OS error is then a bug).
    """
    if isinstance(exc, BrokenPipeError):
        _end_on_closed_stdout()
    if isinstance(exc, JobFailed):
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(exc.status)
    if isinstance(exc, UserError):
        exit_user_error(prog, str(exc))
    if in_task or not isinstance(
        exc, CompactHydraException | OmegaConfBaseException | OSError | ValueError
    ):
        raise exc
    if isinstance(exc, OSError):
        # Hydra creates the run directory before the task starts.
        where = getattr(exc, "filename", None) or "the run directory"
        exit_user_error(
            prog,
            f"cannot create {where} ({exc.strerror or exc}); set paths.output_dir= to a "
            "writable directory",
        )
    # A composition error, or Hydra's own check of the flags (`-m` with `--cfg`).
    exit_user_error(prog, config_error_sentence(exc))


def finish_wandb(exit_code: int = 0) -> None:
    """End the wandb run of this process, if one is active (nothing when wandb is unused).

    Args:
        exit_code: ``0`` for a run that finished, anything else marks the wandb run failed.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def _end_on_closed_stdout() -> NoReturn:
    """Exit quietly: the reader of standard output has gone (``... | head -1``).

    Standard output is pointed at ``os.devnull`` first, so that flushing it at exit does not
    fail once more.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)
