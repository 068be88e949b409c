"""Fill a :class:`VolumeCache` from many series: parallel, sharded, resumable, fault tolerant.

A series that cannot be read or preprocessed, for whatever reason, becomes a ``failed``
record naming the error and the run goes on; a cache that cannot be written (disk full,
read-only, no permission) stops the run with a :class:`~ctvoco.errors.UserError` instead.

This module and everything a worker process imports (preprocessing, I/O) stay free of
torch, so worker processes start fast.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ctvoco.cache.volume_cache import CacheWriteError, VolumeCache, cache_write_error, check_key
from ctvoco.errors import DataError, UserError
from ctvoco.preprocessing.pipeline import PreprocessConfig, load_volume, preprocess_volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesSource:
    """One series to preprocess: its cache key, where it is read from, and its ids."""

    key: str
    source: str
    patient_id: str = ""
    series_id: str = ""

    def __post_init__(self) -> None:
        check_key(self.key)


@dataclass
class BuildSummary:
    """What a cache build did."""

    total: int = 0
    skipped: int = 0
    processed: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        """Series processed successfully in this run."""
        return self.processed - len(self.failed)


def parse_shard(shard: str | Sequence[int] | None) -> tuple[int, int]:
    """``"i/n"`` (or ``(i, n)``) -> ``(i, n)`` with ``0 <= i < n``; ``None`` -> ``(0, 1)``."""
    if shard is None or shard == "":
        return 0, 1
    try:
        if isinstance(shard, str):
            index, count = (int(p) for p in shard.split("/"))
        else:
            index, count = (int(p) for p in shard)
    except (TypeError, ValueError):
        raise UserError(f"shard must look like i/n (e.g. shard=0/4); got {shard!r}") from None
    if not 0 <= index < count:
        raise UserError(f"shard={index}/{count}: need 0 <= i < n")
    return index, count


def select_shard(sources: Sequence[SeriesSource], shard: tuple[int, int]) -> list[SeriesSource]:
    """The ``i``-th of ``n`` disjoint, stable parts of ``sources`` (by sorted key)."""
    index, count = shard
    ordered = sorted(sources, key=lambda s: s.key)
    return ordered[index::count]


def process_series(
    source: SeriesSource, config: PreprocessConfig, cache_root: str
) -> dict[str, Any]:
    """Read, preprocess and store one series; return its manifest record.

    Any error of the series itself (bad data, an unreadable file, a bug met on this
    series) is recorded as ``status="failed"`` with the error; only a cache that cannot
    be written raises, because every other series would fail the same way.

    Raises:
        CacheWriteError: Writing the array to the cache failed (disk full, read-only, ...).
    """
    cache = VolumeCache(cache_root)
    start = time.perf_counter()
    record: dict[str, Any] = {
        "key": source.key,
        "patient_id": source.patient_id,
        "series_id": source.series_id,
        "source": source.source,
        "windows": ";".join(f"{lo:g},{hi:g}" for lo, hi in config.windows),
        "shape": "x".join(str(s) for s in config.output_shape),
        "error": "",
        "warnings": "",
    }
    try:
        volume = load_volume(source.source)
        result = preprocess_volume(volume, config)
        try:
            cache.write(source.key, result.array)
        except OSError as exc:
            raise cache_write_error(cache.root, exc) from exc
        record.update(
            status="ok",
            original_shape="x".join(str(s) for s in volume.shape),
            spacing=",".join(f"{s:g}" for s in volume.spacing),
            crop_box=str(result.crop_box),
            warnings=" | ".join(result.warnings),
        )
    except CacheWriteError:
        raise
    except (DataError, OSError, MemoryError) as exc:
        _failed(record, str(exc))
    except Exception as exc:  # a bug met on one series must not cost the others
        log.warning("%s: unexpected error", source.source, exc_info=True)
        _failed(record, f"{source.source}: unexpected {type(exc).__name__}: {exc}")
    record["seconds"] = round(time.perf_counter() - start, 4)
    return record


def _failed(record: dict[str, Any], error: str) -> None:
    record.update(status="failed", error=error, original_shape="", spacing="", crop_box="")


def build_cache(
    sources: Sequence[SeriesSource],
    cache: VolumeCache,
    config: PreprocessConfig,
    *,
    num_workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = True,
    progress: bool = True,
    console: Console | None = None,
) -> BuildSummary:
    """Preprocess every source not yet in ``cache``.

    Args:
        sources: All series of the data set (the shard is selected here).
        cache: Target cache; its variant must match ``config``.
        config: Preprocessing parameters.
        num_workers: Worker processes (0: in this process).
        shard: ``(i, n)``: process only the ``i``-th of ``n`` disjoint parts, for array jobs.
        retry_failed: Re-try series whose earlier attempt failed (default).
        progress: Show a progress bar with series/s.
        console: Where progress and the summary go (default stderr).

    Returns:
        Counts, failures and wall time. The manifest is rebuilt at the end.

    Raises:
        UserError: The cache directory cannot be written (disk full, read-only, no
            permission); the series finished so far stay recorded.
    """
    console = console or Console(stderr=True)
    cache.ensure_variant(config)
    selected = select_shard(sources, shard)
    with _cache_writes(cache):
        cache.remove_stale_temporaries()
        todo = [s for s in selected if not _is_done(cache, s, retry_failed)]
        summary = BuildSummary(total=len(selected), skipped=len(selected) - len(todo))
        if todo:
            cache.check_free_space(len(todo), config)
    start = time.perf_counter()
    try:
        with _SeriesProgress(console, progress, len(todo), shard) as advance:
            for record in _run(todo, config, str(cache.root), num_workers):
                with _cache_writes(cache):
                    cache.write_record(record)
                summary.processed += 1
                if record["status"] != "ok":
                    summary.failed.append(record)
                advance()
    except CacheWriteError:
        with contextlib.suppress(OSError):  # keep what is done listed, if the disk allows
            cache.rebuild_manifest()
        raise
    summary.seconds = time.perf_counter() - start
    with _cache_writes(cache):
        cache.rebuild_manifest()
    _print_summary(console, summary, cache)
    return summary


@contextlib.contextmanager
def _cache_writes(cache: VolumeCache) -> Iterator[None]:
    """Turn an ``OSError`` of the cache directory into a :class:`CacheWriteError`."""
    try:
        yield
    except OSError as exc:
        raise cache_write_error(cache.root, exc) from exc


def _is_done(cache: VolumeCache, source: SeriesSource, retry_failed: bool) -> bool:
    record = cache.record(source.key)
    if record is None:
        return False
    if record.get("status") == "ok":
        return cache.volume_path(source.key).exists()
    return not retry_failed


def _run(
    todo: list[SeriesSource], config: PreprocessConfig, root: str, num_workers: int
) -> Iterator[dict[str, Any]]:
    if num_workers <= 0 or len(todo) <= 1:
        for source in todo:
            yield process_series(source, config, root)
        return
    context = _worker_context()
    pool = ProcessPoolExecutor(
        max_workers=min(num_workers, len(todo)), mp_context=context, initializer=_init_worker
    )
    try:
        pending: set[Future[dict[str, Any]]] = set()
        queue = iter(todo)
        # Keep a bounded number of tasks in flight so a huge data set does not queue up at once.
        for source in queue:
            pending.add(pool.submit(process_series, source, config, root))
            if len(pending) >= 4 * num_workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(process_series, nxt, config, root))
    finally:
        # On an error (or an interrupt) the queued series are dropped, not run to the end.
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a clean server process where available, spawned elsewhere.

    Plain fork is not safe here: the parent may hold OpenCV or torch thread pools, and a
    forked child can deadlock on their locks.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["ctvoco.cache.builder"])
        return context
    return multiprocessing.get_context("spawn")


def start_worker_server() -> None:
    """Start the server process that preprocessing workers are forked from, ahead of time.

    Optional (a parallel build starts it when needed): a program that calls this first
    lets the server import the preprocessing modules while the program itself is still
    importing and scanning, instead of afterwards. Does nothing where workers are spawned.
    """
    if _worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _init_worker() -> None:
    import ctvoco.opencv  # noqa: F401  (OpenCV single-threaded in workers too)


class _SeriesProgress:
    """Progress bar (terminal) or a line every 10 % (logs) over processed series."""

    def __init__(self, console: Console, enabled: bool, total: int, shard: tuple[int, int]) -> None:
        self.console = console
        self.enabled = enabled and total > 0
        self.total = total
        label = "preprocess" if shard == (0, 1) else f"preprocess shard {shard[0]}/{shard[1]}"
        self.progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} series/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
        )
        self.start = 0.0
        self.done = 0
        self.last_report = 0.0

    def __enter__(self) -> Callable[[], None]:
        self.start = time.perf_counter()
        self.task = self.progress.add_task("preprocess", total=self.total, rate="-")
        self.progress.__enter__()
        return self.advance

    def advance(self) -> None:
        self.done += 1
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = f"{self.done / elapsed:.2f}"
        self.progress.update(self.task, advance=1, rate=rate)
        # Non-interactive logs (CI, cluster jobs) get a line every 10 %.
        if self.enabled and not self.console.is_terminal:
            step = max(1, self.total // 10)
            if self.done % step == 0 or self.done == self.total:
                self.console.print(f"preprocess: {self.done}/{self.total} series, {rate} series/s")

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]


def _print_summary(console: Console, summary: BuildSummary, cache: VolumeCache) -> None:
    rate = summary.processed / summary.seconds if summary.seconds > 0 else 0.0
    console.print(
        f"cache {cache.root}: {summary.ok} preprocessed, {summary.skipped} already done, "
        f"{len(summary.failed)} failed ({rate:.2f} series/s); manifest: {cache.manifest_path}"
    )
    if summary.failed:
        table = Table(title=f"{len(summary.failed)} failed series (see manifest.csv)")
        table.add_column("key")
        table.add_column("error", overflow="fold")
        for record in summary.failed[:20]:
            table.add_row(record["key"], record["error"])
        console.print(table)
