"""Worker functions for the process tests: the real one, plus what its process did."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ctvoco.cache.builder import process_series as build_one

HEAVY_MODULES = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "torchvision")
LOG_VARIABLE = "CTVOCO_PROBE_LOG"
"""File to which :func:`slow_process_series` appends ``<key> <pid>`` when it starts a series."""
PAUSE_VARIABLE = "CTVOCO_PROBE_SECONDS"
"""Seconds :func:`slow_process_series` waits before processing a series."""


def process_series(*args: Any) -> dict[str, Any]:
    """:func:`ctvoco.cache.builder.process_series`, reporting the worker's pid and heavy modules."""
    record = build_one(*args)
    record["worker_pid"] = os.getpid()
    record["heavy_modules"] = sorted(m for m in HEAVY_MODULES if m in sys.modules)
    return record


def slow_process_series(*args: Any) -> dict[str, Any]:
    """:func:`ctvoco.cache.builder.process_series`, logged when it starts and slowed down."""
    log = os.environ.get(LOG_VARIABLE)
    if log:
        with open(log, "a") as handle:
            handle.write(f"{args[0].key} {os.getpid()}\n")
    time.sleep(float(os.environ.get(PAUSE_VARIABLE, "0")))
    return build_one(*args)
