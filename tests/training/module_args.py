"""Constructor arguments of the training modules from flat test settings.

Tests write ``lr=1e-3, warmup_steps=1, grid=2``; the modules take an optimiser partial, a
schedule partial and (the pretrainer) a views object. The settings go into the module's
default partials, so everything else stays as the module's defaults.
"""

from __future__ import annotations

import sys
from typing import Any

from ctvoco.training.optim import with_settings
from ctvoco.voco.views import MODEL_GEOMETRY, VoCoViews

OPTIMIZER_KEYS = ("lr", "weight_decay", "amsgrad")
SCHEDULE_KEYS = ("warmup_steps", "min_lr_ratio", "schedule_steps")


def module_args(module: type, **settings: Any) -> dict[str, Any]:
    """``settings`` as ``module``'s constructor arguments.

    Optimiser and schedule settings become ``optimizer=``/``scheduler=`` partials on top of
    the module's defaults; for a module with ``views``, the view geometry (``grid``,
    ``crop_size``, ``num_random``) becomes ``views=VoCoViews(...)``.
    """
    defaults = sys.modules[module.__module__]
    optimizer = {k: settings.pop(k) for k in OPTIMIZER_KEYS if k in settings}
    schedule = {k: settings.pop(k) for k in SCHEDULE_KEYS if k in settings}
    geometry = {k: settings.pop(k) for k in MODEL_GEOMETRY if k in settings}
    if optimizer:
        settings["optimizer"] = with_settings(defaults.DEFAULT_OPTIMIZER, **optimizer)
    if schedule:
        settings["scheduler"] = with_settings(defaults.DEFAULT_SCHEDULER, **schedule)
    if geometry:
        settings["views"] = VoCoViews(**geometry)
    return settings


def build(module: type, **settings: Any) -> Any:
    """``module(**module_args(module, **settings))``."""
    return module(**module_args(module, **settings))
