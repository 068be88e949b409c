"""The one entry-point convention shared by every ``ctvoco-*`` console script.

Each command is a Hydra app whose configs ship inside the package (``pkg://ctvoco.conf``).
:func:`hydra_app` wraps a task function ``task(cfg) -> None`` so that every command:

- resolves its run directory (``paths.output_dir``) and writes the resolved config there;
- seeds Python, NumPy and torch from the top-level ``seed``;
- reports a *user mistake* (bad override, unknown config option, missing data, a
  :class:`~ctvoco.errors.UserError` raised anywhere, a trainer option Lightning rejects) as
  one sentence on stderr and exits with status 2, without a traceback;
- lets a *bug* surface with its full traceback (exit status 1).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from ctvoco.errors import UserError

CONFIG_PATH = "pkg://ctvoco.conf"
EXIT_USER_ERROR = 2

Task = Callable[[DictConfig], Any]

_NOISE_LINE = re.compile(r"^\s*(full_key|object_type|reference_type|Set the environment)\b")


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
            try:
                prepare_run(cfg)
                return task(cfg)
            except (UserError, MisconfigurationException) as exc:
                # Exit here: past this point Hydra would add its own "Error executing job" line.
                _exit_user_error(_prog(config_name), str(exc))
            except MissingMandatoryValue as exc:
                _exit_user_error(_prog(config_name), _missing_value_sentence(exc))
            except InstantiationException as exc:
                user_error = _find_cause(exc, (UserError, MisconfigurationException))
                if user_error is not None:
                    _exit_user_error(_prog(config_name), str(user_error))
                raise

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

        main.hydra_main = hydra_main  # type: ignore[attr-defined]
        return main

    return decorator


def prepare_run(cfg: DictConfig) -> Path:
    """Fix the run directory, save the resolved config and seed everything.

    The run directory is Hydra's job output directory, which is ``paths.output_dir`` for a
    single run and ``<sweep dir>/<job number>`` in a multirun; ``cfg.paths.output_dir`` is
    rewritten to that absolute path so every later interpolation points into it.

    Returns:
        The run directory.
    """
    from ctvoco.cli.components import check_targets

    check_targets(cfg)  # every _target_ of the run, before any work
    output_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    ensure_writable_dir(output_dir, "paths.output_dir")
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    seed = cfg.get("seed")
    if seed is not None:
        seed_everything(int(seed))
    return output_dir


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (and DataLoader workers) from one integer."""
    import pytorch_lightning as pl

    pl.seed_everything(seed, workers=True, verbose=False)


def ensure_writable_dir(path: str | os.PathLike[str], key: str) -> Path:
    """Create ``path`` if needed and check it is writable, before any long work starts.

    Args:
        path: Directory that a run will write to.
        key: The config key that sets it, named in the error.

    Raises:
        UserError: The directory cannot be created or written.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to {directory} ({exc.strerror or exc}); set {key}= to a writable "
            "directory"
        ) from exc
    return directory


def config_error_sentence(exc: BaseException) -> str:
    """Fold a Hydra/OmegaConf composition error into one readable sentence."""
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


def _missing_value_sentence(exc: MissingMandatoryValue) -> str:
    key = getattr(exc, "full_key", None) or "a required value"
    return f"{key} is required but not set; pass {key}=... on the command line"


def _find_cause(
    exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _prog(default: str) -> str:
    return Path(sys.argv[0]).name or default


def _exit_user_error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
