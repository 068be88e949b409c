"""The worker function of the light-worker test: the real one, plus what its process loaded."""

from __future__ import annotations

import os
import sys
from typing import Any

from ctvoco.cache.builder import process_series as build_one

HEAVY_MODULES = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "torchvision")


def process_series(*args: Any) -> dict[str, Any]:
    """:func:`ctvoco.cache.builder.process_series`, reporting the worker's pid and heavy modules."""
    record = build_one(*args)
    record["worker_pid"] = os.getpid()
    record["heavy_modules"] = sorted(m for m in HEAVY_MODULES if m in sys.modules)
    return record
