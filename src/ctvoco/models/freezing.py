"""Freezing the first feature stages of a timm backbone (through ``timm.utils.model.freeze``)."""

from __future__ import annotations

import logging

from timm.utils.model import freeze
from torch import nn

from ctvoco.errors import UserError

log = logging.getLogger(__name__)


def stage_prefix(backbone: nn.Module, stages: int) -> list[str]:
    """Names of every module up to the end of feature stage ``stages``, in forward order.

    timm registers modules in forward order, so this is the stem and the first ``stages``
    stages (timm ``feature_info``), plus the containers that hold them.

    Raises:
        UserError: The backbone has no ``feature_info``.
    """
    info = getattr(backbone, "feature_info", None)
    modules = [entry["module"] for entry in info] if info else []
    if not modules:
        raise UserError(f"{type(backbone).__name__} has no feature_info; cannot freeze stages")
    boundary = modules[min(stages, len(modules)) - 1]
    names = [name for name, _ in backbone.named_modules()]
    inside = [i for i, n in enumerate(names) if n == boundary or n.startswith(boundary + ".")]
    return names[: (inside[-1] + 1) if inside else 0]


def whole_subtrees(backbone: nn.Module, names: list[str]) -> list[str]:
    """The largest modules among ``names`` whose every descendant is among ``names`` too.

    A container only partly in ``names`` (timm's ``blocks`` when a few of its stages are)
    is left out; its members that are wholly in are listed instead. ``""`` is the backbone.
    """
    wanted = set(names)
    chosen: list[str] = []
    for name in names:
        if any(name == c or c == "" or name.startswith(c + ".") for c in chosen):
            continue
        module = backbone.get_submodule(name)
        below = (f"{name}.{sub}" if name else sub for sub, _ in module.named_modules() if sub)
        if all(n in wanted for n in below):
            chosen.append(name)
    return chosen


def freeze_backbone_stages(backbone: nn.Module, stages: int) -> int:
    """Freeze the stem and the first ``stages`` feature stages (timm ``feature_info``).

    The parameters are frozen with ``timm.utils.model.freeze``; BatchNorm layers stay
    ``BatchNorm`` (the state-dict keys do not change). Keeping their running statistics
    fixed is the caller's part: it keeps the frozen modules in evaluation mode (see
    :func:`frozen_stage_modules`).

    Returns:
        The number of frozen parameter tensors.

    Raises:
        UserError: The backbone has no ``feature_info``.
    """
    names = whole_subtrees(backbone, stage_prefix(backbone, stages))
    if not names:
        return 0
    freeze(backbone, [] if names == [""] else names, include_bn_running_stats=False)
    for name in names:
        log.debug("frozen %s", name or type(backbone).__name__)
    return sum(1 for name in names for _ in backbone.get_submodule(name).parameters())


def frozen_stage_modules(backbone: nn.Module) -> list[nn.Module]:
    """The largest submodules of ``backbone`` whose parameters are all frozen.

    Only modules that hold parameters (directly or below) count, and a module is listed
    only if no ancestor is; the backbone itself when everything is frozen.
    """
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(backbone)
    return found
