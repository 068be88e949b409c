"""A cache build in its own process, for the process tests: ``python -m tests.cache.build_probe
SOURCES.json CACHE_DIR NUM_WORKERS [BARRIER_DIR]``.

Series go through :func:`tests.cache.worker_probe.slow_process_series`. With a barrier
folder the build starts only once the file ``go`` appears there (after writing
``ready-<pid>``), so that two builds really run at the same time. The last line of stdout
is the build summary as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ctvoco.cache import VolumeCache, build_cache, builder
from ctvoco.io.series import SeriesSource
from ctvoco.preprocessing import PreprocessConfig
from tests.cache import worker_probe

CONFIG = PreprocessConfig(shape=(6, 24, 24))


def wait_for_go(barrier: Path, timeout: float = 120.0) -> None:
    """Say this process is ready, then wait for the test to start every build at once."""
    (barrier / f"ready-{os.getpid()}").write_text("")
    deadline = time.monotonic() + timeout
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.02)


def main() -> None:
    """Build the cache and print the summary."""
    sources_file, cache_dir, num_workers = sys.argv[1:4]
    sources = [SeriesSource(k, s) for k, s in json.loads(Path(sources_file).read_text())]
    if len(sys.argv) > 4:
        wait_for_go(Path(sys.argv[4]))
    builder.process_series = worker_probe.slow_process_series
    summary = build_cache(
        sources, VolumeCache(cache_dir), CONFIG, num_workers=int(num_workers), progress=False
    )
    counts = {
        name: getattr(summary, name)
        for name in ("total", "skipped", "processed", "ok")
        if hasattr(summary, name)
    }
    print(json.dumps({**counts, "failed": len(summary.failed), "pid": os.getpid()}))


if __name__ == "__main__":
    main()
