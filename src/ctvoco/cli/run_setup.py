"""Setting a run up before its task starts: the config check, the run directory, the seed.

Also the clean-up of a run directory that a command stopped by a user mistake left with
nothing in it but what the command itself had just written.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from ctvoco.cli.config_types import check_config_types
from ctvoco.errors import UserError
from ctvoco.io.atomic import write_text_atomic

MAX_SEED = 2**32 - 1
"""The largest seed NumPy accepts."""
PROBE_BYTES = b"ctvoco write test\n"
"""What :func:`ensure_writable_dir` writes: a few real bytes, so that a full disk fails."""
CLOCK_SLACK_S = 0.5
"""File times lag the system clock by a tick: a file this much older than the command's start
still counts as written by the command (see :func:`discard_run_dir`)."""
HYDRA_RUN_FILES = frozenset(
    {".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "config.yaml"}
)
"""What Hydra and :func:`prepare_run` put into a run directory before the task starts (and the
``*.log`` files next to them)."""

log = logging.getLogger(__name__)


def prepare_run(cfg: DictConfig, program: str | None = None) -> Path:
    """Check the config, fix the run directory, save the resolved config and seed everything.

    The run directory is Hydra's job output directory (``paths.output_dir``);
    ``cfg.paths.output_dir`` is rewritten to that absolute path so every later interpolation
    points into it.

    Args:
        cfg: The composed config of the run.
        program: Its top-level config (``"finetune"``, ...): which entry of
            :data:`~ctvoco.cli.config_types.PROGRAM_KEY_TYPES` to check.

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
