"""The optimiser and learning-rate schedule of a module, given as two partials.

A module receives ``optimizer`` and ``scheduler`` as callables that still lack their first
inputs, the way Hydra's ``_partial_: true`` configs make them::

    optimizer: {_target_: torch.optim.AdamW, _partial_: true, lr: 1.0e-4, weight_decay: 0.01}
    scheduler: {_target_: ctvoco.training.schedules.WarmupCosine, _partial_: true,
                warmup_steps: 5000, min_lr_ratio: 0.0}

``optimizer(params)`` builds the optimiser; ``scheduler()`` builds the per-step LR factor
(:mod:`ctvoco.training.schedules`) that a ``LambdaLR`` applies. Python callers pass
``functools.partial`` objects, or nothing for the module's defaults. The same settings may
also come as a plain mapping with a ``_target_`` key: that is how a module's
hyper-parameters record them, so that a checkpoint holds no pickled objects.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pytorch_lightning import LightningModule

from ctvoco.errors import ArgumentError, UserError, is_finite_number, is_whole_number
from ctvoco.training.schedules import check_schedule_steps, stepping_batches

PartialSpec = Callable[..., Any] | Mapping[str, Any]
"""A ``functools.partial`` (or any callable) or a ``{"_target_": ..., **keywords}`` mapping."""


def as_partial(spec: PartialSpec, where: str) -> functools.partial[Any]:
    """``spec`` as a ``functools.partial`` whose keywords are the settings.

    Args:
        spec: A partial, another callable (no settings), or a mapping with ``_target_``.
        where: The argument ``spec`` was given for (``optimizer``), named in errors.

    Raises:
        ArgumentError: ``spec`` is neither, or its ``_target_`` names no importable class.
    """
    if isinstance(spec, functools.partial):
        if spec.args:
            raise ArgumentError(where, f" must give its settings by name; got {spec!r}")
        return functools.partial(spec.func, **spec.keywords)
    if isinstance(spec, Mapping):
        settings = {k: v for k, v in spec.items() if not str(k).startswith("_")}
        return functools.partial(_locate(spec.get("_target_"), where), **settings)
    if callable(spec):
        return functools.partial(spec)
    raise ArgumentError(
        where, f" must be a partial (a config with _target_ and _partial_: true); got {spec!r}"
    )


def with_settings(spec: PartialSpec, **changes: Any) -> functools.partial[Any]:
    """``spec`` with some settings changed: ``with_settings(DEFAULT_OPTIMIZER, lr=1e-3)``.

    Args:
        spec: A partial or a mapping with ``_target_`` (a module's default).
        **changes: Settings that replace or add to those of ``spec``.
    """
    base = as_partial(spec, "spec")
    return functools.partial(base.func, **{**base.keywords, **changes})


def _locate(target: object, where: str) -> Callable[..., Any]:
    """The class a recorded ``_target_`` names: any importable class (``package.module.Name``).

    Raises:
        ArgumentError: ``target`` is not a dotted name, cannot be imported (with the closest
            name of its module, when there is one), or is not a class.
    """
    if not isinstance(target, str) or "." not in target:
        raise ArgumentError(
            f"{where}._target_", f" must name a class as package.module.Name; got {target!r}"
        )
    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ArgumentError(f"{where}._target_", f"={target!r} cannot be imported ({exc})") from exc
    found = getattr(module, name, None)
    if found is None:
        close = difflib.get_close_matches(name, [n for n in dir(module) if not n.startswith("_")])
        hint = f"; did you mean '{module_name}.{close[0]}'?" if close else ""
        raise ArgumentError(
            f"{where}._target_", f"={target!r} does not exist: {module_name} has no {name}{hint}"
        )
    if not isinstance(found, type):
        raise ArgumentError(f"{where}._target_", f"={target!r} is not a class")
    return found


def describe(factory: functools.partial[Any]) -> dict[str, Any]:
    """The plain mapping of a partial: ``_target_``, ``_partial_`` and its keywords.

    :func:`as_partial` turns it back into an equal partial; it holds only plain values, so
    a checkpoint's hyper-parameters stay loadable with ``weights_only=True``.
    """
    func = factory.func
    target = f"{func.__module__}.{func.__qualname__}"
    return {"_target_": target, "_partial_": True, **factory.keywords}


def check_optimizer(where: str, factory: functools.partial[Any]) -> None:
    """Refuse optimiser settings that torch would reject only once training starts.

    Raises:
        ArgumentError: ``lr`` is not a number > 0 or ``weight_decay`` not a number >= 0,
            naming the setting (``optimizer.lr=0``).
    """
    settings = factory.keywords
    rules = (
        ("lr", lambda v: is_finite_number(v) and v > 0, "a number greater than 0"),
        ("weight_decay", lambda v: is_finite_number(v) and v >= 0, "a number >= 0"),
    )
    _apply(where, settings, rules)
    check_optimizer_kind(where, factory)


def check_optimizer_kind(where: str, factory: functools.partial[Any]) -> None:
    """Refuse an optimiser partial that does not build a ``torch.optim.Optimizer``.

    A class is checked as it is; any other callable (a function that makes the optimiser)
    is called once on a probe parameter and what it returns is checked.

    Raises:
        ArgumentError: The partial names a class that is not an optimiser, or builds
            something else, naming what it built.
        UserError: The optimiser refuses its settings.
    """
    func = factory.func
    if isinstance(func, type):
        if not issubclass(func, torch.optim.Optimizer):
            raise ArgumentError(
                where, f" is {_dotted(func)}, not a torch.optim.Optimizer (a subclass of it)"
            )
        return
    try:
        built = factory([torch.nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from exc
    if not isinstance(built, torch.optim.Optimizer):
        raise ArgumentError(
            where,
            f" ({_dotted(func)}) built a {_dotted(type(built))}, not a torch.optim.Optimizer",
        )


def _dotted(obj: Any) -> str:
    """``module.QualName`` of a class or function (``dict`` for builtins)."""
    module = getattr(obj, "__module__", "") or ""
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return name if module == "builtins" else f"{module}.{name}"


def check_schedule(where: str, factory: functools.partial[Any]) -> Any:
    """Refuse schedule settings the schedule would reject, and build the schedule.

    Returns:
        ``factory()``, the schedule (a ``LambdaLR`` factor).

    Raises:
        ArgumentError: ``warmup_steps`` is not a whole number >= 0, ``min_lr_ratio`` not
            from 0 to 1, ``schedule_steps`` not beyond the warm-up, or the schedule refuses
            its settings (``half_period``); naming the setting (``scheduler.warmup_steps``);
            or it does not build a per-step LR factor (a torch LR scheduler class, say).
    """
    settings = factory.keywords
    rules = (
        ("warmup_steps", lambda v: is_whole_number(v) and v >= 0, "a whole number >= 0"),
        ("min_lr_ratio", lambda v: is_finite_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    )
    _apply(where, settings, rules)
    if "schedule_steps" in settings:
        check_schedule_steps(where, settings["schedule_steps"], settings.get("warmup_steps", 0))
    func = factory.func
    if isinstance(func, type) and issubclass(func, torch.optim.lr_scheduler.LRScheduler):
        raise ArgumentError(where, f" is {_dotted(func)}, {_SCHEDULE_KIND}")
    try:
        schedule = factory()
    except ArgumentError as exc:
        raise exc.within(where) from exc
    except TypeError as exc:
        raise UserError(f"{where}: {exc}") from exc
    if not callable(schedule):
        raise ArgumentError(where, f" built a {_dotted(type(schedule))}, {_SCHEDULE_KIND}")
    return schedule


_SCHEDULE_KIND = (
    "not a per-step LR factor: the scheduler partial builds a callable step -> factor "
    "that a LambdaLR applies (e.g. ctvoco.training.schedules.WarmupCosine)"
)


def _apply(
    where: str, settings: Mapping[str, Any], rules: tuple[tuple[str, Any, str], ...]
) -> None:
    """Raise for the first present setting that breaks its rule."""
    for name, valid, allowed in rules:
        if name in settings and not valid(settings[name]):
            raise ArgumentError(f"{where}.{name}", f"={settings[name]} must be {allowed}")


class StepOptimization:
    """A module's optimiser and per-step LR schedule, built from two partials.

    The modules call :meth:`configure` from ``configure_optimizers`` and :meth:`start` from
    ``on_train_start``: the schedule's run length is only read then, after a checkpoint
    restore (see :class:`~ctvoco.training.schedules.WarmupCosine`).

    Args:
        optimizer: ``optimizer(params)`` builds the optimiser; ``None``: ``default_optimizer``.
        scheduler: ``scheduler()`` builds the LR factor; ``None``: ``default_scheduler``.
        default_optimizer: The module's default, as a mapping with ``_target_``.
        default_scheduler: The module's default schedule, likewise.
        where: The section of the module's arguments (``""``: the module's own), named in
            errors; the command line places them in the module's config node.

    Raises:
        ArgumentError: A setting is out of range (see :func:`check_optimizer`,
            :func:`check_schedule`).
    """

    def __init__(
        self,
        optimizer: PartialSpec | None,
        scheduler: PartialSpec | None,
        *,
        default_optimizer: Mapping[str, Any],
        default_scheduler: Mapping[str, Any],
        where: str = "",
    ) -> None:
        prefix = f"{where}." if where else ""
        self.optimizer = as_partial(
            default_optimizer if optimizer is None else optimizer, f"{prefix}optimizer"
        )
        self.scheduler = as_partial(
            default_scheduler if scheduler is None else scheduler, f"{prefix}scheduler"
        )
        check_optimizer(f"{prefix}optimizer", self.optimizer)
        self.schedule = check_schedule(f"{prefix}scheduler", self.scheduler)

    def hparams(self) -> dict[str, dict[str, Any]]:
        """``optimizer`` and ``scheduler`` as plain mappings, for the hyper-parameters."""
        return {"optimizer": describe(self.optimizer), "scheduler": describe(self.scheduler)}

    @property
    def warmup_steps(self) -> int:
        """The schedule's warm-up length (0 when it has none)."""
        return int(getattr(self.schedule, "warmup_steps", 0))

    def configure(self, module: LightningModule) -> dict[str, Any]:
        """The ``configure_optimizers`` result: the trainable parameters, a fresh schedule.

        Frozen parameters (``requires_grad=False``) are left out of the optimiser; the
        ``LambdaLR`` steps once per optimiser step.
        """
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = self.optimizer(params)
        self.schedule = self.scheduler()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def start(self, trainer: object) -> int:
        """Give the schedule the run length of ``trainer``; returns that length in steps."""
        steps = stepping_batches(trainer)
        self.schedule.total_steps = steps
        return steps
