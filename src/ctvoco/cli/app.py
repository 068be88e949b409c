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
- ends quietly when its standard output is a pipe that was closed (``... --help | head -1``);
- explains itself with ``--help``: what it does, its main keys and an example (the
  ``hydra.help.header`` of its config), then only the config groups it composes
  (:func:`help_config_groups`) and its config.

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
from hydra.errors import CompactHydraException, HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ctvoco.cli.jobs import RESULT_ENV, JobFailed, job_value, write_result
from ctvoco.cli.run_setup import discard_run_dir, prepare_run
from ctvoco.cli.user_errors import (
    config_error_sentence,
    exit_user_error,
    missing_plugin_sentence,
    program_name,
    user_error_message,
)
from ctvoco.errors import UserError

CONFIG_PATH = "pkg://ctvoco.conf"
EXIT_BROKEN_PIPE = 128 + 13
"""The exit status of a command whose standard output was closed (as a shell reports SIGPIPE)."""

Task = Callable[[DictConfig], Any]

HELP_GROUPS_RESOLVER = "ctvoco_help_groups"
"""The resolver that ``hydra.help.template`` (``conf/hydra/default.yaml``) lists the
program's config groups with."""


def hydra_app(config_name: str) -> Callable[[Task], Callable[[], Any]]:
    """Turn ``task(cfg)`` into a console-script ``main()`` following the ctvoco conventions.

    Args:
        config_name: Top-level config in ``ctvoco.conf`` (``"pretrain"``, ``"finetune"``, ...).

    Returns:
        A decorator; the decorated function is the console script's ``main``.
    """

    def decorator(task: Task) -> Callable[[], Any]:
        OmegaConf.register_new_resolver(HELP_GROUPS_RESOLVER, help_config_groups, replace=True)
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
    plugin_missing = missing_plugin_sentence(exc)
    if plugin_missing is not None:  # Hydra's MissingConfigException is also an OSError
        exit_user_error(prog, plugin_missing)
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


KIND_FILTERED_GROUPS = ("experiment", "model")
"""Groups whose options are listed only for the program whose kind of model they keep."""


def help_config_groups() -> str:
    """The config groups the running program composes, one ``group: options`` line each.

    A group counts when the program's defaults list or one of its experiments selects it
    (``hydra/`` groups, Hydra's own, are left out). The options of
    :data:`KIND_FILTERED_GROUPS` listed are those made for the program: they compose with
    its config and keep its kind of model (``model.module._target_``), so
    ``ctvoco-finetune`` lists no pretraining experiment and ``ctvoco-predict`` none at all.
    User configs on the search path (``--config-dir``, ``hydra.searchpath``) count like the
    packaged ones.
    """
    from hydra.core.global_hydra import GlobalHydra

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # not inside a Hydra program: nothing to list
        return ""
    loader = GlobalHydra.instance().config_loader()
    config_name = str(hydra_cfg.job.config_name)
    searchpath = [
        str(o) for o in hydra_cfg.overrides.hydra if str(o).startswith("hydra.searchpath")
    ]
    base = loader.load_configuration(config_name, overrides=searchpath, run_mode=RunMode.RUN)
    made_for = {
        group: program_options(loader, group, config_name, searchpath, base)
        for group in KIND_FILTERED_GROUPS
    }
    groups = set().union(
        _selected_groups(base), *map(_selected_groups, made_for["experiment"].values())
    )
    lines = []
    for group in sorted(groups):
        if group in made_for:
            options = sorted(made_for[group])
        else:
            found = loader.get_group_options(group, config_name=config_name, overrides=searchpath)
            options = sorted(found)
        if options:
            usage = "   (+experiment=NAME)" if group == "experiment" else ""
            lines.append(f"{group}: {', '.join(options)}{usage}")
    return "\n".join(lines) + "\n"


def program_options(
    loader: Any, group: str, config_name: str, overrides: list[str], base: DictConfig
) -> dict[str, DictConfig]:
    """Each option of ``group`` made for the program ``config_name``, composed with it.

    Args:
        loader: Hydra's config loader (the program's search path).
        group: A config group (``experiment``, ``model``).
        config_name: The program's top-level config.
        overrides: Overrides every composition gets (``hydra.searchpath``).
        base: The program's config as it is.

    Returns:
        Option name -> composed config, for the options that compose with the program and
        keep its kind of model.
    """
    kind = OmegaConf.select(base, "model.module._target_", default=None)
    # an option of a group in the defaults list replaces it; others are added (+experiment=)
    add = "" if group in _selected_groups(base) else "+"
    found = {}
    options = loader.get_group_options(group, config_name=config_name, overrides=overrides)
    for name in sorted(options):
        try:
            cfg = loader.load_configuration(
                config_name, overrides=[*overrides, f"{add}{group}={name}"], run_mode=RunMode.RUN
            )
        except (HydraException, OmegaConfBaseException):
            continue  # made for a program with other config groups (ctvoco-predict has no data)
        if OmegaConf.select(cfg, "model.module._target_", default=None) == kind:
            found[name] = cfg
    return found


def _selected_groups(cfg: DictConfig) -> set[str]:
    """The config groups of a composed config's defaults tree, outside Hydra's own."""
    groups = {str(key).split("@")[0] for key in cfg.hydra.runtime.choices}
    return {g for g in groups if g != "hydra" and not g.startswith("hydra/")}
