"""The one entry-point convention shared by every ``ctvoco-*`` console script.

Each command is a Hydra app whose configs ship inside the package (``pkg://ctvoco.conf``).
:func:`hydra_app` wraps a task function ``task(cfg) -> None`` so that every command:

- resolves its run directory (``paths.output_dir``) and writes the resolved config there;
- seeds Python, NumPy and torch from the top-level ``seed``;
- checks the type of every value a ``_target_``'s constructor (or the program) reads, and
  leaves no run directory behind when it stops on a user mistake before any work;
- runs every job of a multirun (``-m``) in a child process of its own, one after another,
  and hands the job's result (``optimized_metric`` of it, for Optuna) back to the sweeper;
- reports a *user mistake* (bad override, unknown config option, a required value left
  unset, missing data, a :class:`~ctvoco.errors.UserError` raised anywhere, a trainer
  option Lightning rejects) as one sentence on stderr and exits with status 2, without a
  traceback;
- lets a *bug* surface with its full traceback (exit status 1);
- ends quietly when its standard output is a pipe that was closed (``... --help | head -1``).

Importing this module imports neither torch nor Lightning; they load when a task needs them.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import (
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from ctvoco.errors import UserError
from ctvoco.io.atomic import write_text_atomic

CONFIG_PATH = "pkg://ctvoco.conf"
EXIT_USER_ERROR = 2
MAX_SEED = 2**32 - 1
"""The largest seed NumPy accepts."""
EXIT_BROKEN_PIPE = 128 + 13
"""The exit status of a command whose standard output was closed (as a shell reports SIGPIPE)."""
PROBE_BYTES = b"ctvoco write test\n"
"""What :func:`ensure_writable_dir` writes: a few real bytes, so that a full disk fails."""
RESULT_FILE = "result.json"
"""What a multirun job returned, in its run directory; the sweep process reads it back."""
RESULT_ENV = "CTVOCO_RESULT_FILE"
"""Set by the sweep process for a job's child: where the child writes what the task returned."""
CLOCK_SLACK_S = 0.5
"""File times lag the system clock by a tick: a file this much older than the command's start
still counts as written by the command (see :func:`discard_run_dir`)."""
HYDRA_RUN_FILES = frozenset(
    {".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "config.yaml"}
)
"""What Hydra and :func:`prepare_run` put into a run directory before the task starts (and the
``*.log`` files next to them)."""
PROGRAM_KEY_TYPES: dict[str, dict[str, Any]] = {
    "preprocess": {"num_workers": int, "retry_failed": bool},
    "predict": {
        "batch_size": int,
        "num_workers": int,
        "preprocess_workers": int,
        "tta": bool | None,
    },
    "synth": {"n_patients": int, "n_test": int, "n_flare": int, "second_series_fraction": float},
    "pretrain": {"export_backbone": bool},
}
"""The types of the top-level keys each program reads itself (no ``_target_`` declares them)."""

Task = Callable[[DictConfig], Any]

log = logging.getLogger(__name__)

_NOISE_LINE = re.compile(r"^\s*(full_key|object_type|reference_type|Set the environment)\b")
_MISSING_IN_INTERPOLATION = re.compile(r"Missing mandatory value: (\S+)")
_CHILD_SKIPS_HYDRA = re.compile(
    r"^[+~]*hydra(\.mode|\.run\.dir|\.output_subdir|\.sweep\b|[./]sweeper\b|[./]launcher\b)"
)
_PLAIN_VALUE = re.compile(r"[\w./-]+")


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
            prog = _prog(config_name)
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                return run_job_in_child(prog, cfg.get("optimized_metric"))
            # A multirun job's child: report the result to the sweep process. Taken out of
            # the environment, so that no program this task starts writes there too.
            result_file = os.environ.pop(RESULT_ENV, None)
            try:
                prepare_run(cfg, config_name)
                result = task(cfg)
            except Exception as exc:
                finish_wandb(exit_code=1)
                message = user_error_message(exc)
                if message is None:
                    raise
                if result_file is None:  # a job's directory belongs to its sweep
                    discard_run_dir(Path(HydraConfig.get().runtime.output_dir), state["started"])
                # Exit here: past this point Hydra would add its own "Error executing job" line.
                _exit_user_error(prog, message)
            finish_wandb()
            if result_file is not None:
                write_result(Path(result_file), result)
            return result

        @functools.wraps(task)
        def main() -> Any:
            prog = _prog(config_name)
            # Let exceptions reach us unaltered; Hydra would otherwise print and exit(1).
            os.environ.setdefault("HYDRA_FULL_ERROR", "1")
            state["started"] = time.time()
            try:
                return hydra_main()
            except BrokenPipeError:
                _end_on_closed_stdout()
            except JobFailed as exc:
                print(f"{prog}: error: {exc}", file=sys.stderr)
                sys.exit(exc.status)
            except UserError as exc:
                _exit_user_error(prog, str(exc))
            except (CompactHydraException, OmegaConfBaseException) as exc:
                if state["in_task"]:
                    raise
                _exit_user_error(prog, config_error_sentence(exc))
            except OSError as exc:
                if state["in_task"]:
                    raise
                # Hydra creates the run directory before the task starts.
                where = getattr(exc, "filename", None) or "the run directory"
                _exit_user_error(
                    prog,
                    f"cannot create {where} ({exc.strerror or exc}); set paths.output_dir= to a "
                    "writable directory",
                )
            except ValueError as exc:
                if state["in_task"]:
                    raise
                # Hydra's own check of the command-line flags (e.g. `-m` with `--cfg`).
                _exit_user_error(prog, config_error_sentence(exc))

        main.hydra_main = hydra_main  # type: ignore[attr-defined]
        return main

    return decorator


def prepare_run(cfg: DictConfig, program: str | None = None) -> Path:
    """Check the config, fix the run directory, save the resolved config and seed everything.

    The run directory is Hydra's job output directory (``paths.output_dir``);
    ``cfg.paths.output_dir`` is rewritten to that absolute path so every later interpolation
    points into it.

    Args:
        cfg: The composed config of the run.
        program: Its top-level config (``"finetune"``, ...): which entry of
            :data:`PROGRAM_KEY_TYPES` to check.

    Returns:
        The run directory.

    Raises:
        UserError: A value has the wrong type, a required value is unset, ``seed`` is not an
            integer, or the run directory cannot be written.
    """
    from ctvoco.cli.components import check_targets

    check_targets(cfg)  # every _target_ of the run, before any work
    check_config_types(cfg, program)
    seed = parse_seed(cfg.get("seed"))
    output_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    ensure_writable_dir(output_dir, "paths.output_dir")
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    write_text_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    log.info("run directory %s (process %d)", output_dir, os.getpid())
    if seed is not None:
        # A command without a trainer (ctvoco-synth) never needs torch: don't load it to seed.
        seed_everything(seed, with_torch="trainer" in cfg or "torch" in sys.modules)
    return output_dir


def parse_seed(value: Any) -> int | None:
    """The top-level ``seed`` as an integer (``None`` when unset).

    Raises:
        UserError: ``seed`` is not a whole number.
    """
    if value is None:
        return None
    seed: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        seed = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        seed = int(value)
    if seed is None or not 0 <= seed <= MAX_SEED:
        raise UserError(
            f"seed={value} is not a valid seed; pass seed=N with a whole number N from 0 to "
            f"{MAX_SEED}"
        )
    return seed


# --------------------------------------------------------------------------- config types
_NONE = type(None)
_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", _NONE: "null"}


def check_config_types(cfg: DictConfig, program: str | None = None) -> None:
    """Refuse a value whose type its reader cannot take, before any work starts.

    Every ``_target_`` node is checked against the type hints of its constructor (and of the
    base classes its ``**kwargs`` reach); the program's own top-level keys against
    :data:`PROGRAM_KEY_TYPES`. Only parameters that take integers, numbers or booleans
    (or null) are checked; one that also takes anything else (a string, a list) accepts
    every value here, and ``null`` passes everywhere. Values that cannot be resolved are
    left to the checks that name them.

    Args:
        cfg: The composed config.
        program: The program's top-level config name (``None``: no top-level keys checked).

    Raises:
        UserError: Naming the key, its value, what it is and what it must be.
    """
    for key, annotation in PROGRAM_KEY_TYPES.get(program or "", {}).items():
        kinds = scalar_kinds(annotation)
        if kinds is not None and key in cfg:
            _check_value(cfg, key, key, kinds)
    _check_target_types(cfg, "")


def _check_target_types(node: Any, where: str) -> None:
    """:func:`check_config_types` for the ``_target_`` nodes in ``node`` (at ``where``)."""
    if isinstance(node, ListConfig):
        children = [(f"{where}[{i}]", i) for i in range(len(node))]
    elif isinstance(node, DictConfig):
        target = _resolved(node, "_target_")
        hints = parameter_types(target) if isinstance(target, str) else {}
        children = []
        for key in node:
            dotted = f"{where}.{key}" if where else str(key)
            kinds = scalar_kinds(hints.get(str(key), inspect.Parameter.empty))
            if kinds is not None and not str(key).startswith("_"):
                _check_value(node, key, dotted, kinds)
            children.append((dotted, key))
    else:
        return
    for dotted, key in children:
        child = _resolved(node, key)
        if isinstance(child, DictConfig | ListConfig):
            _check_target_types(child, dotted)


def _resolved(node: DictConfig | ListConfig, key: Any) -> Any:
    """``node[key]`` with interpolations resolved; ``None`` when that fails."""
    try:
        return node[key]
    except (OmegaConfBaseException, KeyError, IndexError, ValueError):
        return None


def _check_value(node: DictConfig, key: Any, dotted: str, kinds: frozenset[type]) -> None:
    """Raise a :class:`UserError` when ``node[key]`` is not one of ``kinds``."""
    try:
        value = node[key]
    except (OmegaConfBaseException, KeyError, ValueError):
        return  # unset or unresolvable: reported where it is read, naming the key
    if _fits(value, kinds):
        return
    raise UserError(
        f"{dotted}={_shown(value)} is {_described(value)}; {dotted} must be {_expected(kinds)}"
    )


@functools.cache
def parameter_types(target: str) -> dict[str, Any]:
    """The annotated type of each keyword a ``_target_`` accepts (empty when unknown).

    A class's parameters come from its ``__init__``; when that takes ``**kwargs``, the
    parameters of the next ``__init__`` in the method resolution order are added, and so on.
    """
    from hydra._internal.utils import _locate

    try:
        obj = _locate(target)
    except Exception:  # an unknown target is check_targets' and Hydra's to report
        return {}
    if isinstance(obj, type):
        functions = [c.__dict__["__init__"] for c in obj.__mro__ if "__init__" in c.__dict__]
    else:
        functions = [obj]
    found: dict[str, Any] = {}
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            break
        hints = _type_hints(function)
        for name, parameter in parameters.items():
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                found.setdefault(name, hints.get(name, inspect.Parameter.empty))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    found.pop("self", None)
    return found


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The evaluated annotations of ``function``; those that cannot be evaluated are left out.

    Annotations are strings under ``from __future__ import annotations``; one that names a
    type imported only for type checkers cannot be evaluated, and must not hide the others.
    """
    function = inspect.unwrap(function)
    try:
        return typing.get_type_hints(function)
    except Exception:
        pass
    namespace = getattr(function, "__globals__", {})
    hints: dict[str, Any] = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # what get_type_hints does, one by one
            except Exception:
                continue
        hints[name] = annotation
    return hints


def scalar_kinds(annotation: Any) -> frozenset[type] | None:
    """The scalar types (``int``, ``float``, ``bool``, ``NoneType``) an annotation allows.

    ``None`` when it allows anything else too (``str``, a list, a literal, no annotation):
    such a parameter is not checked.
    """
    if annotation in (int, float, bool):
        return frozenset({annotation})
    if annotation is None or annotation is _NONE:
        return frozenset({_NONE})
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds: set[type] = set()
        for member in typing.get_args(annotation):
            allowed = scalar_kinds(member)
            if allowed is None:
                return None
            kinds |= allowed
        return frozenset(kinds)
    return None


def _fits(value: Any, kinds: frozenset[type]) -> bool:
    """Whether ``value`` is one of ``kinds`` (an integer is also a number; a bool is neither).

    ``null`` always fits: constructors take it for "unset" even where the hint omits it
    (``data.seed=${seed}`` with ``seed: null``).
    """
    if value is None:
        return True
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int):
        return int in kinds or float in kinds
    if isinstance(value, float):
        return float in kinds
    return False


def _expected(kinds: frozenset[type]) -> str:
    """``an integer or null``, ``a number``, ..."""
    names = [
        _KIND_NAMES[kind]
        for kind in (int, float, bool, _NONE)
        if kind in kinds and not (kind is int and float in kinds)
    ]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _described(value: Any) -> str:
    """What ``value`` is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, ListConfig | list | tuple):
        return "a list"
    if isinstance(value, DictConfig | Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _shown(value: Any) -> str:
    """``value`` as it would be written on the command line."""
    if isinstance(value, DictConfig | ListConfig):
        try:
            value = OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException:
            value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def seed_everything(seed: int, with_torch: bool = True) -> None:
    """Seed Python, NumPy and torch (and DataLoader workers) from one integer.

    Args:
        seed: The seed, ``0 <= seed <= 2**32 - 1``.
        with_torch: Also seed torch, through Lightning (which then seeds loader workers);
            ``False`` seeds Python and NumPy only, without importing torch.
    """
    if with_torch:
        import pytorch_lightning as pl

        pl.seed_everything(seed, workers=True, verbose=False)
        return
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global generator, as Lightning seeds it)


def ensure_writable_dir(path: str | os.PathLike[str], key: str) -> Path:
    """Create ``path`` if needed and check it takes data, before any long work starts.

    A few bytes are written and flushed to the disk (an empty file would be created even on
    a full disk), then the probe file is removed.

    Args:
        path: Directory that a run will write to.
        key: The config key that sets it, named in the error.

    Raises:
        UserError: The directory cannot be created or written, or its disk is full.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_probe(directory / f".write-test-{os.getpid()}")
    except OSError as exc:
        fix = (
            f"free some space there or set {key}= to a directory on another disk"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else f"set {key}= to a writable directory"
        )
        raise UserError(f"cannot write to {directory} ({exc.strerror or exc}); {fix}") from exc
    return directory


def _write_probe(probe: Path) -> None:
    """Write :data:`PROBE_BYTES` to ``probe``, flush them to the disk, remove the file."""
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, PROBE_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def discard_run_dir(run_dir: Path, since: float) -> bool:
    """Remove a run directory that holds nothing but what a failed command wrote into it.

    That is Hydra's record (``.hydra/``), the log and ``config.yaml``, each written after
    ``since``. A directory holding anything else, or anything older (an earlier run's, a
    run to resume), is kept. Empty parents inside the working directory go too.

    Args:
        run_dir: The run directory.
        since: When the command started (``time.time()``).

    Returns:
        Whether the directory was removed.
    """
    if not run_dir.is_dir() or run_dir.is_symlink():
        return False
    run_dir = run_dir.resolve()
    for path in run_dir.rglob("*"):
        name = path.relative_to(run_dir).as_posix()
        if name not in HYDRA_RUN_FILES and not (path.suffix == ".log" and "/" not in name):
            return False
        if path.is_symlink() or path.lstat().st_mtime < since - CLOCK_SLACK_S:
            return False
    shutil.rmtree(run_dir, ignore_errors=True)
    cwd = Path.cwd()
    parent = run_dir.parent
    while parent != cwd and cwd in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent
    return not run_dir.exists()


# ----------------------------------------------------------------------------- multirun
class JobFailed(Exception):
    """A multirun job failed, and the sweeper was told to go on (``max_failure_rate > 0``).

    The sweeper records the failed trial; when it gives up, this ends the command with
    :attr:`status`, the job's exit status.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def run_job_in_child(prog: str, optimized_metric: str | None = None) -> Any:
    """Run the current multirun job as a single run in a child process, and wait for it.

    Every job gets a fresh process (fresh loggers, a fresh wandb run, CUDA and distributed
    state that start clean); the jobs stay sequential. The child is the same program with
    the job's overrides, and its run directory is the job's output directory. What the
    child's task returned comes back through ``<job dir>/result.json`` (:data:`RESULT_FILE`).

    Args:
        prog: The program's name, for messages.
        optimized_metric: The name of the value a sweeper such as Optuna optimises: the
            job then returns that value of its result, as a float.

    Returns:
        What the job's task returned, or its ``optimized_metric`` value.

    Raises:
        SystemExit: With the child's exit status when the job failed (the child already
            printed its error), 1 when its ``optimized_metric`` is NaN, or 2 when its
            result has no ``optimized_metric``; the remaining jobs are not started.
        JobFailed: The job failed (or its metric is NaN) and the sweeper tolerates failed
            jobs (``hydra.sweeper.max_failure_rate > 0``).
    """
    hydra_cfg = HydraConfig.get()
    job = hydra_cfg.job.num
    if optimized_metric is None and "direction" in hydra_cfg.sweeper:
        _exit_user_error(
            prog,
            "this sweeper optimises one number per job: set optimized_metric= to a metric the "
            "program returns (val/task_score for ctvoco-finetune, val/position_mae for "
            "ctvoco-pretrain)",
        )
    job_dir = Path(hydra_cfg.runtime.output_dir).resolve()
    # As typed: read back resolved, an override like `...=${hydra:job.name}` would be frozen.
    overrides = OmegaConf.to_container(hydra_cfg.overrides, resolve=False)
    assert isinstance(overrides, dict)
    command = child_command(
        _program_command(),
        _config_flags(sys.argv[1:]),
        overrides["task"],
        overrides["hydra"],
        job_dir,
    )
    log.info("job %s: %s", job, " ".join(command))
    from hydra.utils import get_original_cwd

    result_file = job_dir / RESULT_FILE
    result_file.unlink(missing_ok=True)  # never read an earlier run's result
    env = {**os.environ, RESULT_ENV: str(result_file)}
    returncode = subprocess.call(command, cwd=get_original_cwd(), env=env)
    tolerated = hydra_cfg.sweeper.get("max_failure_rate")
    if returncode != 0:
        # A negative status is the signal that ended the child; exit as a shell would.
        status = returncode if returncode > 0 else 128 - returncode
        how = f"exit status {returncode}" if returncode > 0 else f"signal {-returncode}"
        # After exit status 2 the child has already said what to fix.
        _job_failed(
            prog,
            f"job {job} failed ({how}; run directory {job_dir})",
            status,
            tolerated,
            quiet=returncode == EXIT_USER_ERROR,
        )
    result = read_result(result_file)
    if optimized_metric is None:
        return result
    value, problem = metric_value(result, str(optimized_metric))
    if problem is not None:
        _exit_user_error(
            prog,
            f"job {job} (run directory {job_dir}) finished, but {problem}; the remaining jobs "
            "were not started",
        )
    if value is not None and math.isnan(value):  # diverged: a failed job, not a score
        _job_failed(
            prog,
            f"job {job} returned {optimized_metric}=nan (run directory {job_dir})",
            1,
            tolerated,
        )
    log.info("job %s: %s=%s", job, optimized_metric, value)
    return value


def _job_failed(prog: str, message: str, status: int, tolerated: Any, quiet: bool = False) -> None:
    """Stop the sweep with the failed job's status, or raise :class:`JobFailed`.

    Args:
        prog: The program's name.
        message: What failed, naming the job and its run directory.
        status: The exit status the command ends with.
        tolerated: The sweeper's ``max_failure_rate`` (``None``: the sweeper has none).
        quiet: Stop without a message of its own (the job already printed one).
    """
    if isinstance(tolerated, int | float) and not isinstance(tolerated, bool) and tolerated > 0:
        print(
            f"{prog}: warning: {message}; the sweep goes on as long as no more than "
            f"hydra.sweeper.max_failure_rate={tolerated} of a batch of jobs fail",
            file=sys.stderr,
        )
        raise JobFailed(f"{message}; too many jobs failed (max_failure_rate={tolerated})", status)
    if not quiet:
        print(f"{prog}: error: {message}; the remaining jobs were not started", file=sys.stderr)
    sys.exit(status)


def write_result(path: Path, result: Any) -> None:
    """Write what a job's task returned as JSON (numbers of any kind as floats)."""
    write_text_atomic(path, json.dumps(_jsonable(result), indent=2, allow_nan=True) + "\n")


def read_result(path: Path) -> Any:
    """What :func:`write_result` wrote (``None`` when the job wrote nothing)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types; tensors and NumPy scalars become floats."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def metric_value(result: Any, name: str) -> tuple[float | None, str | None]:
    """The number called ``name`` in a job's result, or why there is none.

    A program may return a metric under the name it logs (``val/task_score``) or without
    the ``val/`` prefix (``position_mae``); both match ``optimized_metric=val/...``.

    Returns:
        ``(value, None)``, or ``(None, what is wrong)``.
    """
    if not isinstance(result, Mapping):
        return None, f"it returned no metrics, so there is no optimized_metric={name}"
    for key in dict.fromkeys((name, name.removeprefix("val/"))):
        if key in result:
            value = result[key]
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value), None
            return None, f"its optimized_metric={name} is {_shown(value)}, not a number"
    known = ", ".join(sorted(map(str, result))) or "none"
    return None, f"its result has no optimized_metric={name} (it has: {known})"


def child_command(
    program: Sequence[str],
    flags: Sequence[str],
    task_overrides: Sequence[str],
    hydra_overrides: Sequence[str],
    job_dir: Path,
) -> list[str]:
    """The command line that runs one multirun job as a single run in ``job_dir``.

    Args:
        program: How to start this program (``[python, script]`` or ``[python, -m, module]``).
        flags: Config-location flags of the original command (``--config-dir DIR``, ...).
        task_overrides: The job's own overrides (``HydraConfig.overrides.task``).
        hydra_overrides: The command line's ``hydra.*`` overrides; those about sweeping or
            the run directory are left out.
        job_dir: The job's output directory, which becomes the run directory.
    """
    task = [o for o in task_overrides if not re.match(r"^[+~]*paths\.output_dir=", o)]
    hydra_extra = [o for o in hydra_overrides if not _CHILD_SKIPS_HYDRA.match(o)]
    where = _override_value(str(job_dir))
    return [
        *program,
        *flags,
        *task,
        *hydra_extra,
        f"paths.output_dir={where}",
        # A config may set hydra.mode=MULTIRUN (hparams_search does): the child runs one job.
        "hydra.mode=RUN",
        f"hydra.run.dir={where}",
        # The job's .hydra/ folder keeps what the sweep wrote (its overrides, its number).
        "hydra.output_subdir=null",
    ]


def _program_command() -> list[str]:
    """How this program was started: ``python -m module`` or ``python script``."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        return [sys.executable, "-m", spec.name.removesuffix(".__main__")]
    return [sys.executable, str(Path(sys.argv[0]).absolute())]


def _config_flags(argv: Sequence[str]) -> list[str]:
    """The ``--config-path/--config-name/--config-dir`` flags of a Hydra command line.

    They are passed on as given: the child starts in the same working directory.
    """
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(list(argv))
    flags: list[str] = []
    for flag, value in (
        ("--config-path", args.config_path),
        ("--config-name", args.config_name),
        ("--config-dir", args.config_dir),
    ):
        if value is not None:
            flags += [flag, str(value)]
    return flags


def _override_value(text: str) -> str:
    """``text`` as a Hydra override value (quoted unless it is plain)."""
    if _PLAIN_VALUE.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def finish_wandb(exit_code: int = 0) -> None:
    """End the wandb run of this process, if one is active (nothing when wandb is unused).

    Args:
        exit_code: ``0`` for a run that finished, anything else marks the wandb run failed.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


# ------------------------------------------------------------------------------- errors
def user_error_message(exc: BaseException) -> str | None:
    """The one-sentence message of a user mistake, or ``None`` when ``exc`` is a bug."""
    if isinstance(exc, UserError) or _is_misconfiguration(exc):
        return str(exc)
    if isinstance(exc, MissingMandatoryValue):
        return _missing_value_sentence(exc)
    if isinstance(exc, InterpolationResolutionError):
        return interpolation_sentence(exc)
    if isinstance(exc, InstantiationException):
        cause = _user_cause(exc)
        return None if cause is None else str(cause)
    return None


def config_error_sentence(exc: BaseException) -> str:
    """Fold a Hydra/OmegaConf composition error into one readable sentence."""
    if isinstance(exc, InterpolationResolutionError):
        return interpolation_sentence(exc)
    parts: list[str] = []
    for err in (exc, exc.__cause__):
        if err is None:
            continue
        for line in str(err).splitlines():
            line = line.strip()
            if line and not _NOISE_LINE.match(line) and line not in parts:
                parts.append(line)
    text = " ".join(p if p.endswith((".", ":")) else p + "." for p in parts)
    text = re.sub(r"\s+", " ", text).replace(":.", ":")
    return text or type(exc).__name__


def interpolation_sentence(exc: InterpolationResolutionError) -> str:
    """One sentence for a ``${...}`` that cannot be resolved, naming the key to set."""
    where = getattr(exc, "full_key", None)
    missing = _MISSING_IN_INTERPOLATION.search(str(exc))
    if missing is not None:
        key = missing.group(1).lstrip(".")
        used_by = f" ({where} uses it)" if where and where != key else ""
        return f"{key} is required but not set{used_by}; pass {key}=... on the command line"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{where or 'the config'} cannot be resolved: {first.rstrip('.')}"


def _missing_value_sentence(exc: MissingMandatoryValue) -> str:
    key = getattr(exc, "full_key", None) or "a required value"
    return f"{key} is required but not set; pass {key}=... on the command line"


def _is_misconfiguration(exc: BaseException) -> bool:
    """A trainer option Lightning rejects (checked without importing Lightning)."""
    module = sys.modules.get("lightning_fabric.utilities.exceptions")
    kind = getattr(module, "MisconfigurationException", None)
    return kind is not None and isinstance(exc, kind)


def _user_cause(exc: BaseException) -> BaseException | None:
    """The first user mistake in the chain of causes of ``exc``, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError) or _is_misconfiguration(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _prog(default: str) -> str:
    return Path(sys.argv[0]).name or default


def _exit_user_error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _end_on_closed_stdout() -> None:
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
