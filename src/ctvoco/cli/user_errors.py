"""Telling a user mistake from a bug, and reporting it as one sentence with exit status 2.

A *user mistake* is a bad override, an unknown config option, a required value left unset,
a :class:`~ctvoco.errors.UserError` raised anywhere or a trainer option Lightning rejects;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import NoReturn

from hydra.errors import InstantiationException
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from ctvoco.errors import ArgumentError, UserError

EXIT_USER_ERROR = 2
"""The exit status of a command stopped by a user mistake."""

_NOISE_LINE = re.compile(r"^\s*(full_key|object_type|reference_type|Set the environment)\b")
_MISSING_IN_INTERPOLATION = re.compile(r"Missing mandatory value: (\S+)")
_FULL_KEY = re.compile(r"^full_key: (\S+)$", re.MULTILINE)

PLUGIN_EXTRAS = {
    "hydra/sweeper/optuna": (
        "the Optuna sweeper (hydra-optuna-sweeper; hparams_search=classifier_optuna uses it)",
        "sweep",
    ),
}
"""Config options that an optional Hydra plugin provides: what the plugin is, and its extra."""


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
        if isinstance(cause, ArgumentError):
            return str(cause.within(instantiated_node(exc, cause)))
        return None if cause is None else str(cause)
    return None


def instantiated_node(exc: BaseException, cause: BaseException) -> str:
    """The config key of the node whose constructor raised ``cause`` (``model.module``).

    Hydra names the node (``full_key: model.module``) in the error it wraps each failed
    constructor call in; the innermost such error on the way to ``cause`` is that node's.
    Empty when no error names one.
    """
    node = ""
    current: BaseException | None = exc
    while current is not None and current is not cause:
        found = (
            _FULL_KEY.search(str(current)) if isinstance(current, InstantiationException) else None
        )
        node = found.group(1) if found else node
        current = current.__cause__ or current.__context__
    return node


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


def missing_plugin_sentence(exc: BaseException) -> str | None:
    """One sentence for a config option whose optional plugin is not installed, else ``None``.

    Args:
        exc: A composition error (Hydra's "Could not find 'hydra/sweeper/optuna'").
    """
    text = str(exc)
    for option, (plugin, extra) in PLUGIN_EXTRAS.items():
        if f"Could not find '{option}'" in text:
            group, name = option.rsplit("/", 1)
            return f"{group}={name} needs {plugin}: pip install 'ctvoco[{extra}]'"
    return None


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
    """One sentence for a ``???`` value that was never set."""
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


def program_name(default: str) -> str:
    """The name the command was started by (``ctvoco-finetune``), for messages."""
    return Path(sys.argv[0]).name or default


def exit_user_error(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` on stderr and exit with :data:`EXIT_USER_ERROR`."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
