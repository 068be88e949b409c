"""Build the Lightning pieces named in a run's config: loggers, callbacks, trainer.

This is the only place (with the entry points) that calls ``hydra.utils.instantiate``;
library code receives plain Python objects.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctvoco.errors import ArgumentError, UserError

log = logging.getLogger(__name__)

ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "ctvoco.",
    "pytorch_lightning.",
    "lightning.pytorch.",
    "torch.optim.",
)
"""Modules that the job's ``_target_`` keys may name: ctvoco instantiates only classes from
these packages. Configs are still code: the ``hydra`` section (``hydra.callbacks``, the
launcher and sweeper, logging) is Hydra's, which acts on it before any check here."""


def check_targets(cfg: Any, where: str = "") -> None:
    """Refuse any ``_target_`` outside :data:`ALLOWED_TARGET_PREFIXES`.

    Args:
        cfg: A config node (``DictConfig``, ``ListConfig`` or plain containers).
        where: Dotted key of ``cfg``, for the error message.

    Raises:
        UserError: A ``_target_`` names a callable outside the allowed packages.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    if isinstance(cfg, Mapping):
        target = cfg.get("_target_")
        if target is not None and not _allowed_target(str(target)):
            raise UserError(
                f"{where or 'config'}._target_={target!r} is not allowed; configs may only "
                f"instantiate classes from {', '.join(p.rstrip('.') for p in ALLOWED_TARGET_PREFIXES)}"
            )
        for key, value in cfg.items():
            check_targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(cfg, list | tuple):
        for i, value in enumerate(cfg):
            check_targets(value, f"{where}[{i}]")


def _allowed_target(target: str) -> bool:
    """The dotted name and the object it resolves to both live in an allowed package.

    Checking the name alone is not enough: ``ctvoco.cli.app.os.system`` starts with
    ``ctvoco.`` but resolves to ``os.system`` through a module attribute.
    """
    if not target.startswith(ALLOWED_TARGET_PREFIXES):
        return False
    from hydra._internal.utils import _locate

    try:
        obj = _locate(target)
    except ImportError:
        return False
    module = getattr(obj, "__module__", None) or ""
    return isinstance(obj, type) and f"{module}.".startswith(ALLOWED_TARGET_PREFIXES)


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
    check_targets(node, key)
    if not kwargs:
        return instantiate(node, _convert_="all")
    constructor = instantiate(node, _convert_="all", _partial_=True)
    try:
        return constructor(**kwargs)
    except ArgumentError as exc:  # raised outside Hydra, which would name the node
        raise exc.within(node_key(node, key)) from exc


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
    return views, instantiate(node, _convert_="all", views=dataclasses.asdict(views))


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
        loggers.append(instantiate(node, _convert_="all", _partial_=True)(**extra))
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
    """Instantiate every callback under ``cfg.callbacks`` (skipping null entries)."""
    section = cfg.get("callbacks")
    if not section:
        return []
    callbacks = []
    for name, node in section.items():
        if node and "_target_" in node:
            check_targets(node, f"callbacks.{name}")
            callbacks.append(instantiate(node, _convert_="all"))
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
