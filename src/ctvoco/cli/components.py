"""Build the Lightning pieces named in a run's config: loggers, callbacks, trainer.

This is the only place (with the entry points) that calls ``hydra.utils.instantiate``;
library code receives plain Python objects.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctvoco.errors import UserError

log = logging.getLogger(__name__)

ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "ctvoco.",
    "pytorch_lightning.",
    "lightning.pytorch.",
    "torch.optim.",
)
"""Modules that ``_target_`` keys may name. Configs are code: a config file can only make
ctvoco call constructors from these packages, never arbitrary callables."""


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
    instances into configs if they were merged into the node).
    """
    node = cfg.get(key)
    if node is None:
        raise UserError(f"the config has no '{key}' section")
    check_targets(node, key)
    if not kwargs:
        return instantiate(node, _convert_="all")
    return instantiate(node, _convert_="all", _partial_=True)(**kwargs)


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


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Instantiate every logger under ``cfg.logger`` (an empty or null group gives none).

    The wandb logger runs offline when no login is configured and ``WANDB_MODE`` is unset,
    and says once where its files are and how to upload them later.
    """
    section = cfg.get("logger")
    if not section:
        return []
    loggers = []
    for name, node in section.items():
        if not node or "_target_" not in node:
            continue
        extra: dict[str, Any] = {}
        if "wandb" in str(node["_target_"]).lower():
            extra = _wandb_options(node)
        check_targets(node, f"logger.{name}")
        loggers.append(instantiate(node, _convert_="all", **extra))
    return loggers


def _wandb_options(node: DictConfig) -> dict[str, Any]:
    mode = wandb_mode()
    if mode == "offline" and not node.get("offline", False):
        save_dir = Path(str(node.get("save_dir", "."))) / "wandb"
        log.warning(
            "wandb: no login found (WANDB_API_KEY or `wandb login`), logging offline to %s; "
            "upload later with `wandb sync %s/offline-run-*`, or pick logger=csv",
            save_dir,
            save_dir,
        )
        return {"offline": True}
    return {}


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
    """The Lightning ``Trainer`` of ``cfg.trainer`` with the run's loggers and callbacks."""
    loggers = build_loggers(cfg)
    callbacks = [*build_callbacks(cfg), *extra_callbacks]
    return build(cfg, "trainer", logger=loggers or False, callbacks=callbacks)
