"""One multirun job as a single run of the same program, in a child process of its own.

Every job gets a fresh process (fresh loggers, a fresh wandb run, CUDA and distributed
state that start clean); the jobs stay sequential. The child is the same program with the
job's overrides, and its run directory is the job's output directory. What the child's task
returned comes back through ``<job dir>/result.json`` (:data:`RESULT_FILE`); the job hands it
(or its ``optimized_metric`` value, for a sweeper such as Optuna) to the sweeper.
:class:`hydra_plugins.ctvoco_launcher.process_launcher.ProcessLauncher` runs each job here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from ctvoco.cli.config_types import shown_value
from ctvoco.cli.user_errors import EXIT_USER_ERROR, exit_user_error, program_name
from ctvoco.io.atomic import write_text_atomic

RESULT_FILE = "result.json"
"""What a multirun job returned, in its run directory; the sweep process reads it back."""
RESULT_ENV = "CTVOCO_RESULT_FILE"
"""Set by the sweep process for a job's child: where the child writes what the task returned."""

log = logging.getLogger(__name__)

_CHILD_SKIPS_HYDRA = re.compile(
    r"^[+~]*hydra(\.mode|\.run\.dir|\.output_subdir|\.sweep\b|[./]sweeper\b|[./]launcher\b)"
)
_PLAIN_VALUE = re.compile(r"[\w./-]+")


class JobFailed(Exception):
    """A multirun job failed, and the sweeper was told to go on (``max_failure_rate > 0``).

    The sweeper records the failed trial; when it gives up, this ends the command with
    :attr:`status`, the job's exit status.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def run_job_in_child(cfg: DictConfig) -> Any:
    """Run the current multirun job (``cfg``, Hydra's job config) in a child, and wait for it.

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
    prog = program_name(hydra_cfg.job.name)
    optimized_metric = cfg.get("optimized_metric")
    check_optimized_metric(prog, optimized_metric)
    job_dir = Path(hydra_cfg.runtime.output_dir).resolve()
    # As typed: read back resolved, an override like `...=${hydra:job.name}` would be frozen.
    overrides = OmegaConf.to_container(hydra_cfg.overrides, resolve=False)
    assert isinstance(overrides, dict)
    command = child_command(
        program_command(), config_flags(), overrides["task"], overrides["hydra"], job_dir
    )
    log.info("job %s: %s", hydra_cfg.job.num, " ".join(command))
    from hydra.utils import get_original_cwd

    result_file = job_dir / RESULT_FILE
    result_file.unlink(missing_ok=True)  # never read an earlier run's result
    env = {**os.environ, RESULT_ENV: str(result_file)}
    returncode = subprocess.call(command, cwd=get_original_cwd(), env=env)
    if returncode != 0:
        # A negative status is the signal that ended the child; exit as a shell would.
        status = returncode if returncode > 0 else 128 - returncode
        how = f"exit status {returncode}" if returncode > 0 else f"signal {-returncode}"
        # After exit status 2 the child has already said what to fix.
        _job_failed(
            prog,
            f"job {hydra_cfg.job.num} failed ({how}; run directory {job_dir})",
            status,
            quiet=returncode == EXIT_USER_ERROR,
        )
    return job_value(read_result(result_file), optimized_metric)


def check_optimized_metric(prog: str, optimized_metric: Any) -> None:
    """Stop when the sweeper optimises a number but ``optimized_metric`` names none."""
    if optimized_metric is None and "direction" in HydraConfig.get().sweeper:
        exit_user_error(
            prog,
            "this sweeper optimises one number per job: set optimized_metric= to a metric the "
            "program returns (val/task_score for ctvoco-finetune, val/position_mae for "
            "ctvoco-pretrain)",
        )


def job_value(result: Any, optimized_metric: Any) -> Any:
    """What the current job hands its sweeper: ``result``, or its ``optimized_metric`` value.

    Raises:
        SystemExit: 2 when the result has no such number, 1 when it is NaN and the sweeper
            tolerates no failed job.
        JobFailed: It is NaN and the sweeper tolerates failed jobs.
    """
    if optimized_metric is None:
        return result
    hydra_cfg = HydraConfig.get()
    prog = program_name(hydra_cfg.job.name)
    job, job_dir = hydra_cfg.job.num, Path(hydra_cfg.runtime.output_dir).resolve()
    value, problem = metric_value(result, str(optimized_metric))
    if problem is not None:
        exit_user_error(
            prog,
            f"job {job} (run directory {job_dir}) finished, but {problem}; the remaining jobs "
            "were not started",
        )
    if value is not None and math.isnan(value):  # diverged: a failed job, not a score
        _job_failed(prog, f"job {job} returned {optimized_metric}=nan (run directory {job_dir})", 1)
    log.info("job %s: %s=%s", job, optimized_metric, value)
    return value


def _job_failed(prog: str, message: str, status: int, quiet: bool = False) -> NoReturn:
    """Stop the sweep with the failed job's status, or raise :class:`JobFailed`.

    Args:
        prog: The program's name.
        message: What failed, naming the job and its run directory.
        status: The exit status the command ends with.
        quiet: Stop without a message of its own (the job already printed one).
    """
    tolerated = HydraConfig.get().sweeper.get("max_failure_rate")
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
            return None, f"its optimized_metric={name} is {shown_value(value)}, not a number"
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


def program_command() -> list[str]:
    """How this program was started: ``python -m module`` or ``python script``."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        return [sys.executable, "-m", spec.name.removesuffix(".__main__")]
    return [sys.executable, str(Path(sys.argv[0]).absolute())]


def config_flags() -> list[str]:
    """The ``--config-path/--config-dir/--config-name`` flags that find the job's configs.

    Read from the current Hydra config: its primary config directory, a directory added on
    the command line (``--config-dir``) and its primary config's name.
    """
    hydra_cfg = HydraConfig.get()
    flags: list[str] = []
    for source in hydra_cfg.runtime.config_sources:
        location = source.path if source.schema == "file" else f"{source.schema}://{source.path}"
        if source.provider == "main":
            flags += ["--config-path", location]
        elif source.provider == "command-line":
            flags += ["--config-dir", location]
    return [*flags, "--config-name", str(hydra_cfg.job.config_name)]


def _override_value(text: str) -> str:
    """``text`` as a Hydra override value (quoted unless it is plain)."""
    if _PLAIN_VALUE.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
