"""The one entry-point convention shared by every ``ctvoco-*`` console script.

Each command is a Hydra app whose configs ship inside the package (``pkg://ctvoco.conf``).
:func:`hydra_app` wraps a task function ``task(cfg) -> None`` so that every command:

- resolves its run directory (``paths.output_dir``) and writes the resolved config there;
- seeds Python, NumPy and torch from the top-level ``seed``;
- runs every job of a multirun (``-m``) in a child process of its own, one after another;
- reports a *user mistake* (bad override, unknown config option, a required value left
  unset, missing data, a :class:`~ctvoco.errors.UserError` raised anywhere, a trainer
  option Lightning rejects) as one sentence on stderr and exits with status 2, without a
  traceback;
- lets a *bug* surface with its full traceback (exit status 1).

Importing this module imports neither torch nor Lightning; they load when a task needs them.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import (
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from ctvoco.errors import UserError

CONFIG_PATH = "pkg://ctvoco.conf"
EXIT_USER_ERROR = 2
MAX_SEED = 2**32 - 1
"""The largest seed NumPy accepts."""
PROBE_BYTES = b"ctvoco write test\n"
"""What :func:`ensure_writable_dir` writes: a few real bytes, so that a full disk fails."""

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
        state = {
            "in_task": False
        }  # True once the task started: later errors are not composition errors

        @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
        def hydra_main(cfg: DictConfig) -> Any:
            state["in_task"] = True
            prog = _prog(config_name)
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                return run_job_in_child(prog)
            try:
                prepare_run(cfg)
                result = task(cfg)
            except Exception as exc:
                finish_wandb(exit_code=1)
                message = user_error_message(exc)
                if message is None:
                    raise
                # Exit here: past this point Hydra would add its own "Error executing job" line.
                _exit_user_error(prog, message)
            finish_wandb()
            return result

        @functools.wraps(task)
        def main() -> Any:
            prog = _prog(config_name)
            # Let exceptions reach us unaltered; Hydra would otherwise print and exit(1).
            os.environ.setdefault("HYDRA_FULL_ERROR", "1")
            try:
                return hydra_main()
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


def prepare_run(cfg: DictConfig) -> Path:
    """Fix the run directory, save the resolved config and seed everything.

    The run directory is Hydra's job output directory (``paths.output_dir``);
    ``cfg.paths.output_dir`` is rewritten to that absolute path so every later interpolation
    points into it.

    Returns:
        The run directory.

    Raises:
        UserError: A required value is unset, ``seed`` is not an integer, or the run
            directory cannot be written.
    """
    from ctvoco.cli.components import check_targets

    check_targets(cfg)  # every _target_ of the run, before any work
    seed = parse_seed(cfg.get("seed"))
    output_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    ensure_writable_dir(output_dir, "paths.output_dir")
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
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


# ----------------------------------------------------------------------------- multirun
def run_job_in_child(prog: str) -> int:
    """Run the current multirun job as a single run in a child process, and wait for it.

    Every job gets a fresh process (fresh loggers, a fresh wandb run, CUDA and distributed
    state that start clean); the jobs stay sequential. The child is the same program with
    the job's overrides, and its run directory is the job's output directory.

    Returns:
        ``0`` when the job succeeded.

    Raises:
        SystemExit: With the child's exit status when the job failed (the child already
            printed its error); the remaining jobs are not started.
    """
    hydra_cfg = HydraConfig.get()
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
    log.info("job %s: %s", hydra_cfg.job.num, " ".join(command))
    from hydra.utils import get_original_cwd

    returncode = subprocess.call(command, cwd=get_original_cwd())
    if returncode == 0:
        return 0
    # A negative status is the signal that ended the child; exit as a shell would report it.
    status = returncode if returncode > 0 else 128 - returncode
    if returncode != EXIT_USER_ERROR:  # the child has already said what to fix
        how = f"exit status {returncode}" if returncode > 0 else f"signal {-returncode}"
        print(
            f"{prog}: error: job {hydra_cfg.job.num} failed ({how}; run directory {job_dir}); "
            "the remaining jobs were not started",
            file=sys.stderr,
        )
    sys.exit(status)


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
