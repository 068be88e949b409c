"""The type check of every config value a constructor or a program reads, before any work.

A value that a ``_target_``'s constructor (or the program itself) cannot take is refused
with one sentence naming the key, the value, what it is and what it must be, before a run
directory fills up or a model loads.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ctvoco.errors import UserError

PROGRAM_KEY_TYPES: dict[str, dict[str, Any]] = {
    "preprocess": {"num_workers": int, "retry_failed": bool},
    "predict": {
        "batch_size": int,
        "num_workers": int,
        "preprocess_workers": int,
        "tta": bool | None,
    },
    "synth": {
        "n_patients": int,
        "n_test": int,
        "n_flare": int,
        "second_series_fraction": float,
        "segmented_fraction": float,
    },
    "pretrain": {"export_backbone": bool},
    "segment": {"restart": bool, "predict_batch_size": int},
}
"""The types of the top-level keys each program reads itself (no ``_target_`` declares them)."""
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
        f"{dotted}={shown_value(value)} is {_described(value)}; {dotted} must be {_expected(kinds)}"
    )


@functools.cache
def parameter_types(target: str) -> dict[str, Any]:
    """The annotated type of each keyword a ``_target_`` accepts (empty when unknown).

    A class's parameters come from its ``__init__``; when that takes ``**kwargs``, the
    parameters of the next ``__init__`` in the method resolution order are added, and so on.
    """
    try:
        obj = locate(target)
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


def locate(path: str) -> Any:
    """The object a dotted path names (``ctvoco.data.RSNADataModule``), imported as needed.

    The longest prefix of ``path`` that is a module is imported; the rest are attributes.

    Raises:
        ImportError: No prefix of ``path`` is a module.
        AttributeError: The module has no such attribute.
    """
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for name in parts[end:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {path!r}")


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


def shown_value(value: Any) -> str:
    """``value`` as it would be written on the command line."""
    if isinstance(value, DictConfig | ListConfig):
        try:
            value = OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException:
            value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)
