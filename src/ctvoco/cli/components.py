"""Build the Lightning pieces named in a run's config: loggers, callbacks, trainer.

This is the only place (with the entry points) that calls ``hydra.utils.instantiate``;
library code receives plain Python objects. A ``_target_`` may be any importable class or
function, the user's own included; the sections of :data:`KINDS` take only objects of their
kind (a callback must be a Lightning ``Callback``, ...).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import netrc
import os
import pkgutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctvoco.errors import ArgumentError, UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """What the object of a config section must be.

    Attributes:
        key: The section's dotted key; ``*`` stands for any one name (``callbacks.*``).
        base: The dotted name of the class it must be an instance (or subclass) of.
        described: How errors name the kind (``a Lightning Callback``).
        partial: The section is a ``_partial_`` whose class must subclass ``base``.
    """

    key: str
    base: str
    described: str
    partial: bool = False

    def matches(self, where: str) -> bool:
        """Whether the dotted key ``where`` is this kind's section."""
        wanted, parts = self.key.split("."), where.split(".")
        return len(wanted) == len(parts) and all(
            w in ("*", p) for w, p in zip(wanted, parts, strict=True)
        )

    def base_class(self) -> type:
        """The class :attr:`base` names (imported on first use)."""
        found = locate_target(self.base, self.key)
        assert isinstance(found, type)
        return found


KINDS: tuple[Kind, ...] = (
    Kind("callbacks.*", "pytorch_lightning.Callback", "a Lightning Callback"),
    Kind("logger.*", "pytorch_lightning.loggers.Logger", "a Lightning Logger"),
    Kind("trainer", "pytorch_lightning.Trainer", "a Lightning Trainer"),
    Kind("data", "pytorch_lightning.LightningDataModule", "a LightningDataModule"),
    Kind("data.members.*", "pytorch_lightning.LightningDataModule", "a LightningDataModule"),
    Kind("model.module", "pytorch_lightning.LightningModule", "a LightningModule"),
    Kind("model.module.optimizer", "torch.optim.Optimizer", "a torch.optim.Optimizer", True),
)
"""The sections whose ``_target_`` must be of a kind. Any importable class or function may
be a ``_target_`` (configs are code the user wrote); in these sections a class must be of
the kind, and a function must return an object of it."""


def kind_of(where: str) -> Kind | None:
    """The kind the section ``where`` (a dotted key) must be, or ``None`` for any."""
    return next((kind for kind in KINDS if kind.matches(where)), None)


def check_targets(cfg: Any, where: str = "") -> None:
    """Check that every ``_target_`` imports, and that each class is of its section's kind.

    Nothing is called: a function's result is checked where it is built (:func:`build`).

    Args:
        cfg: A config node (``DictConfig``, ``ListConfig`` or plain containers).
        where: Dotted key of ``cfg``, for the error message.

    Raises:
        UserError: A ``_target_`` cannot be imported (naming the key and the dotted path),
            or names a class of another kind than its section's (:data:`KINDS`).
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    if isinstance(cfg, Mapping):
        target = cfg.get("_target_")
        if target is not None:
            _check_target_kind(str(target), where or "config")
        for key, value in cfg.items():
            check_targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(cfg, list | tuple):
        for i, value in enumerate(cfg):
            check_targets(value, f"{where}[{i}]")


def _check_target_kind(target: str, where: str) -> None:
    """Import ``target``; refuse a class that is not of the kind of section ``where``."""
    found = locate_target(target, where)
    kind = kind_of(where)
    if kind is None or not isinstance(found, type) or issubclass(found, kind.base_class()):
        return
    raise UserError(
        f"{where}._target_={target!r} is not {kind.described}: {_dotted(found)} is no "
        f"subclass of {kind.base}"
    )


def check_built(obj: Any, where: str) -> Any:
    """``obj``, when it is of the kind of section ``where``; else a :class:`UserError`.

    Args:
        obj: What the section's ``_target_`` built.
        where: The section's dotted key (``callbacks.counter``).
    """
    kind = kind_of(where)
    if kind is None or kind.partial or isinstance(obj, kind.base_class()):
        return obj
    raise UserError(
        f"{where} built a {_dotted(type(obj))}, not {kind.described} (an instance of "
        f"{kind.base}); check {where}._target_"
    )


def _dotted(obj: Any) -> str:
    """``module.QualName`` of a class or function (just the name for builtins)."""
    module = getattr(obj, "__module__", "") or ""
    name = getattr(obj, "__qualname__", None) or repr(obj)
    return name if module == "builtins" else f"{module}.{name}"


def locate_target(target: str, where: str) -> Any:
    """The object a dotted ``_target_`` names, imported the way Hydra imports it.

    Args:
        target: ``package.module.Name`` (or ``package.module.Class.attribute``).
        where: The config key of the section, for the error message.

    Raises:
        UserError: Naming ``where`` and ``target``: its package is not installed (or not
            on ``PYTHONPATH``), importing one of its modules failed, or a name in it does
            not exist (with the closest existing name, when there is one).
    """
    parts = target.split(".")
    if not all(part.isidentifier() for part in parts):
        raise UserError(f"{where}._target_={target!r} is not a dotted Python name")
    found, depth = _import_modules(parts, target, where)
    for i in range(depth, len(parts)):
        parent = found
        found = getattr(parent, parts[i], _MISSING)
        if found is _MISSING:
            raise UserError(
                f"{where}._target_={target!r} cannot be imported: {'.'.join(parts[:i])} has "
                f"no {parts[i]!r}{_did_you_mean(parent, parts[: i + 1])}"
            )
    return found


_MISSING = object()


def _import_modules(parts: list[str], target: str, where: str) -> tuple[Any, int]:
    """Import the modules of ``parts`` from the top down: the last one, and how many parts
    name modules (the rest are attributes)."""
    module: Any = None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a module that exists fails on an import of its own
                raise _import_failed(name, exc, target, where) from exc
            if module is None:
                raise UserError(
                    f"{where}._target_={target!r} cannot be imported: no module named "
                    f"{name!r} (is the package that defines it installed, or its folder on "
                    "PYTHONPATH?)"
                ) from None
            return module, depth - 1
        except Exception as exc:  # the user's module itself fails: say so, with its error
            raise _import_failed(name, exc, target, where) from exc
    return module, len(parts)


def _import_failed(name: str, exc: BaseException, target: str, where: str) -> UserError:
    """The error of a module of the target that exists but fails to import."""
    return UserError(
        f"{where}._target_={target!r}: importing {name} failed ({type(exc).__name__}: {exc})"
    )


def _did_you_mean(parent: Any, parts: list[str]) -> str:
    """``; did you mean 'a.b.C'?`` for the closest name in ``parent``, or ``""``."""
    names = {n for n in dir(parent) if not n.startswith("_")}
    path = getattr(parent, "__path__", None)
    if path is not None:
        names |= {m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_")}
    close = difflib.get_close_matches(parts[-1], sorted(names), n=1)
    return f"; did you mean '{'.'.join([*parts[:-1], close[0]])}'?" if close else ""


def build(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg[key]`` after checking its targets; plain containers, not OmegaConf.

    ``kwargs`` are passed to the constructor as they are (Hydra would turn dataclass
    instances into configs if they were merged into the node). An
    :class:`~ctvoco.errors.ArgumentError` of that call is placed in the node's config key
    (``fold`` becomes ``data.fold``), as Hydra's own calls are by the command line.
    """
    node = cfg.get(key)
    if node is None:
        raise UserError(f"the config has no '{key}' section")
    where = node_key(node, key)
    check_targets(node, where)
    if not kwargs:
        return check_built(instantiate(node, _convert_="all"), where)
    constructor = instantiate(node, _convert_="all", _partial_=True)
    try:
        return check_built(constructor(**kwargs), where)
    except ArgumentError as exc:  # raised outside Hydra, which would name the node
        raise exc.within(where) from exc


def node_key(node: Any, key: str) -> str:
    """The dotted config key of ``node`` (``model.module``), or ``key`` outside a config."""
    full_key = node._get_full_key(None) if isinstance(node, DictConfig) else ""
    return str(full_key) or key


def build_model_with_views(cfg: DictConfig) -> tuple[Any, Any]:
    """``model.views``, then ``model.module`` built with them: ``(views, module)``.

    The views go into the module's node as their plain fields (``views=``), so the module
    is instantiated by Hydra like any node and its argument errors name ``model.module``.
    """
    import dataclasses

    views = build(cfg.model, "views")
    node = cfg.model.get("module")
    if node is None:
        raise UserError("the config has no 'module' section")
    check_targets(node, "model.module")
    module = instantiate(node, _convert_="all", views=dataclasses.asdict(views))
    return views, check_built(module, "model.module")


def wandb_mode(environ: Mapping[str, str] | None = None, netrc_path: Path | None = None) -> str:
    """How wandb should run here: ``WANDB_MODE`` if set, else online with a login, else offline.

    A login is an ``WANDB_API_KEY`` in the environment or an ``api.wandb.ai`` entry in
    ``~/.netrc`` (what ``wandb login`` writes). Nothing is sent over the network to decide.
    """
    env = os.environ if environ is None else environ
    if env.get("WANDB_MODE"):
        return env["WANDB_MODE"]
    if env.get("WANDB_API_KEY"):
        return "online"
    path = netrc_path or Path(env.get("NETRC", Path.home() / ".netrc"))
    try:
        host = env.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
        if netrc.netrc(path).authenticators(host):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
"""Environment variables through which torchrun, SLURM and Lightning's DDP launcher tell a
process its rank; a process is global rank 0 when none of them is set to anything else."""

_offline_notices: set[str] = set()  # save dirs whose offline notice was printed


def is_global_rank_zero(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is global rank 0 (or not distributed), before any trainer exists.

    Args:
        environ: The environment to read (``os.environ`` by default).
    """
    env = os.environ if environ is None else environ
    return all(env.get(name, "0").strip() in ("", "0") for name in RANK_VARIABLES)


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Instantiate every logger under ``cfg.logger`` (an empty or null group gives none).

    The wandb logger gets the whole resolved config as its run config (``data.fold``,
    ``seed``, ``trainer.*``, ...), so that runs can be told apart and filtered by any
    setting. It runs offline when no login is configured and ``WANDB_MODE`` is unset; global
    rank 0 then says once where its files are and how to upload them later.

    Raises:
        UserError: ``logger=tensorboard`` without tensorboard (or tensorboardX) installed.
    """
    section = cfg.get("logger")
    if not section:
        return []
    loggers = []
    for name, node in section.items():
        if not node or "_target_" not in node:
            continue
        target = str(node["_target_"])
        extra: dict[str, Any] = {}
        if "wandb" in target.lower():
            extra = {**_wandb_options(node), "config": wandb_run_config(cfg, node)}
            keep_wandb_out_of_forked_processes()
        elif target.endswith("TensorBoardLogger"):
            _require_tensorboard(name)
        check_targets(node, f"logger.{name}")
        # Through a partial: ``config`` would clash with instantiate's own first argument.
        built = instantiate(node, _convert_="all", _partial_=True)(**extra)
        loggers.append(check_built(built, f"logger.{name}"))
    return loggers


def wandb_run_config(cfg: DictConfig, node: DictConfig) -> dict[str, Any]:
    """The wandb run config: the run's resolved config, then the logger's own ``config``.

    Args:
        cfg: The run's config (its interpolations resolved here).
        node: The wandb logger's config node; a ``config`` mapping in it is merged on top.
    """
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    own = node.get("config")
    if own:
        resolved.update(OmegaConf.to_container(own, resolve=True))  # type: ignore[arg-type]
    return resolved


def _wandb_options(node: DictConfig) -> dict[str, Any]:
    """``offline=True`` when wandb is to run offline, with a notice when no login decided it.

    ``WANDB_MODE=offline`` (or ``disabled``) is the user's choice: it is followed without
    any notice. Only an unset ``WANDB_MODE`` without a login gives the notice.
    """
    mode = wandb_mode()
    if mode != "offline" or node.get("offline", False):
        return {}
    if not os.environ.get("WANDB_MODE"):
        save_dir = Path(str(node.get("save_dir", "."))) / "wandb"
        if is_global_rank_zero() and str(save_dir) not in _offline_notices:
            _offline_notices.add(str(save_dir))
            log.warning(
                "wandb: no login found (WANDB_API_KEY or `wandb login`), logging offline to "
                "%s; upload later with `wandb sync %s/offline-run-*`, or pick logger=csv",
                save_dir,
                save_dir,
            )
    return {"offline": True}


_fork_hook_registered = False


def keep_wandb_out_of_forked_processes() -> None:
    """Drop wandb's import hooks in every process forked from this one (loader workers).

    A wandb run registers hooks that report, to its service, the modules imported after it
    started. A data-loader worker forked from the trainer inherits them, and its first import
    of such a module (MONAI's transforms, imported by the views on first use) would run the
    hook there, which wandb refuses in a forked process (``ForkedError``). Workers never log
    to wandb, so the hooks are removed in them right after the fork. Registered once.
    """
    global _fork_hook_registered
    if _fork_hook_registered or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=_drop_wandb_import_hooks)
    _fork_hook_registered = True


def _drop_wandb_import_hooks() -> None:
    """Forget wandb's pending import hooks in this (forked) process, if wandb is loaded."""
    hooks = sys.modules.get("wandb.sdk.lib.import_hooks")
    drop = getattr(hooks, "unregister_all_post_import_hooks", None)
    if drop is not None:
        drop()


def _require_tensorboard(name: str) -> None:
    """Stop with the install command when neither tensorboard nor tensorboardX is present."""
    if not any(importlib.util.find_spec(module) for module in ("tensorboard", "tensorboardX")):
        raise UserError(
            f"logger.{name} (logger=tensorboard) needs the tensorboard package: "
            "pip install 'ctvoco[tensorboard]', or pick logger=csv"
        )


def build_callbacks(cfg: DictConfig) -> list[Any]:
    """Instantiate every callback under ``cfg.callbacks`` (skipping null entries).

    Raises:
        UserError: An entry builds no Lightning ``Callback``, naming its key.
    """
    section = cfg.get("callbacks")
    if not section:
        return []
    callbacks = []
    for name, node in section.items():
        if node and "_target_" in node:
            check_targets(node, f"callbacks.{name}")
            built = instantiate(node, _convert_="all")
            callbacks.append(check_built(built, f"callbacks.{name}"))
    return callbacks


def build_trainer(cfg: DictConfig, extra_callbacks: Iterable[Any] = ()) -> Any:
    """The Lightning ``Trainer`` of ``cfg.trainer`` with the run's loggers and callbacks.

    ``trainer.sync_batchnorm`` is switched off (with one log line) when the trainer runs on
    CPUs, where PyTorch has no ``SyncBatchNorm``: ``trainer=ddp trainer.accelerator=cpu``
    then works as it is.
    """
    loggers = build_loggers(cfg)
    callbacks = [*build_callbacks(cfg), *extra_callbacks]
    extra: dict[str, Any] = {}
    if _sync_batchnorm_on_cpu(cfg.get("trainer") or {}):
        if is_global_rank_zero():
            log.info(
                "trainer.sync_batchnorm=true needs GPUs: switched off for this CPU run "
                "(trainer.accelerator=%s)",
                cfg.trainer.get("accelerator"),
            )
        extra["sync_batchnorm"] = False
    return build(cfg, "trainer", logger=loggers or False, callbacks=callbacks, **extra)


def _sync_batchnorm_on_cpu(trainer: Mapping[str, Any]) -> bool:
    """``sync_batchnorm`` is on and the trainer runs on CPUs (``cpu``, or ``auto`` without CUDA)."""
    if not trainer.get("sync_batchnorm", False):
        return False
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator == "cpu":
        return True
    if accelerator != "auto":
        return False
    import torch

    return not torch.cuda.is_available()
