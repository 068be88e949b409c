"""Fill a :class:`VolumeCache` from many series: parallel, sharded, resumable, fault tolerant.

A series that cannot be read or preprocessed, for whatever reason, becomes a ``failed``
record naming the error and the run goes on; a cache that cannot be written (disk full,
read-only, no permission) stops the run with a :class:`~ctvoco.errors.UserError` instead.

Several runs may fill one cache at the same time: a series is processed under its claim
(:meth:`VolumeCache.claim`), and its record is written before the claim ends. A run skips
the series another run holds, then waits for them and takes their records (or processes
them itself when the other run died without finishing them), so every run ends with the
complete cache and manifest. Worker processes end with the run's main process, even when
it is killed.

This module and everything a worker process imports (preprocessing, I/O) stay free of
torch, so worker processes start fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ctvoco.cache.volume_cache import CacheWriteError, VolumeCache, cache_write_error
from ctvoco.cache.workers import init_worker, worker_context
from ctvoco.errors import DataError, UserError
from ctvoco.io.masks import align_mask, read_mask
from ctvoco.io.series import SeriesSource
from ctvoco.io.volume import CTVolume
from ctvoco.preprocessing.masks import preprocess_mask
from ctvoco.preprocessing.pipeline import (
    PreprocessConfig,
    PreprocessResult,
    load_volume,
    preprocess_volume,
)

log = logging.getLogger(__name__)

DONE, CLAIMED, BY_OTHER_RUN = "done", "claimed", "by_other_run"
"""Outcomes of one series: processed here, held by another run, finished by another run."""


@dataclass
class BuildSummary:
    """What a cache build did."""

    total: int = 0
    skipped: int = 0
    processed: int = 0
    by_other_run: int = 0
    """Series this run found finished by a run working on the same cache meanwhile."""
    failed: list[dict[str, Any]] = field(default_factory=list)
    """Records of the series that failed, in this run or in another one meanwhile."""
    masks: int = 0
    """Organ masks cached with their series."""
    mask_failures: list[dict[str, Any]] = field(default_factory=list)
    """Records of series whose segmentation could not be used (the series itself is ok)."""
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        """Series done successfully during this run (by it, or by another run meanwhile)."""
        return self.processed + self.by_other_run - len(self.failed)


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
    """Read, preprocess and store one series (and its organ mask); return its manifest record.

    Any error of the series itself (bad data, an unreadable file, a bug met on this
    series) is recorded as ``status="failed"`` with the error; only a cache that cannot
    be written raises, because every other series would fail the same way. A mask that
    cannot be used leaves the series usable: its record says ``mask="failed"`` and the reason
    is among the warnings.

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
        "mask": "",
        "mask_source": source.mask,
    }
    try:
        if source.error:
            raise DataError(source.error)
        volume = load_volume(source.source)
        result = preprocess_volume(volume, config)
        try:
            cache.write(source.key, result.array)
        except OSError as exc:
            raise cache_write_error(cache.root, exc) from exc
        warnings = list(result.warnings)
        if source.mask:
            record["mask"] = _store_mask(cache, source, volume, result, config, warnings)
        record.update(
            status="ok",
            original_shape="x".join(str(s) for s in volume.shape),
            spacing=",".join(f"{s:g}" for s in volume.spacing),
            crop_box=str(result.crop_box),
            warnings=" | ".join(warnings),
        )
        if volume.instance_numbers is not None:
            # InstanceNumber of every source slice in array order, for image-level labels
            # (records only; the manifest keeps its columns).
            record["instance_numbers"] = list(volume.instance_numbers)
    except CacheWriteError:
        raise
    except (DataError, OSError, MemoryError) as exc:
        _failed(record, str(exc))
    except Exception as exc:  # a bug met on one series must not cost the others
        log.warning("%s: unexpected error", source.source, exc_info=True)
        _failed(record, f"{source.source}: unexpected {type(exc).__name__}: {exc}")
    record["seconds"] = round(time.perf_counter() - start, 4)
    return record


def _store_mask(
    cache: VolumeCache,
    source: SeriesSource,
    volume: CTVolume,
    result: PreprocessResult,
    config: PreprocessConfig,
    warnings: list[str],
) -> str:
    """Read the series' mask, take it through the series' geometry and cache it.

    Returns:
        ``"ok"``, or ``"failed"`` with the reason appended to ``warnings``.

    Raises:
        CacheWriteError: The mask cannot be written to the cache.
    """
    try:
        labels, mask_warnings = align_mask(read_mask(source.mask), volume)
    except DataError as exc:
        warnings.append(f"segmentation not used: {exc}")
        return "failed"
    warnings.extend(mask_warnings)
    cached = preprocess_mask(
        labels, result.crop_box, volume.spacing, config.shape, config.target_spacing
    )
    try:
        cache.write_mask(source.key, cached)
    except OSError as exc:
        raise cache_write_error(cache.root, exc) from exc
    return "ok"


def _failed(record: dict[str, Any], error: str) -> None:
    record.update(status="failed", error=error, original_shape="", spacing="", crop_box="")


def claim_and_process(
    process: Callable[[SeriesSource, PreprocessConfig, str], dict[str, Any]],
    source: SeriesSource,
    config: PreprocessConfig,
    cache_root: str,
    planned: dict[str, Any] | None,
    wait: bool,
) -> tuple[str, dict[str, Any]]:
    """Process one series under its claim and record it, unless another run has it.

    Args:
        process: What processes the series (:func:`process_series`).
        source: The series.
        config: Preprocessing parameters.
        cache_root: The cache directory.
        planned: The series' record when this run planned it (``None``: none); a
            different record now means another run finished the series meanwhile.
        wait: Wait for a claim held by another run instead of returning at once.

    Returns:
        ``(DONE, record)`` when processed here, ``(CLAIMED, {})`` when another run holds
        the series, ``(BY_OTHER_RUN, record)`` when another run recorded it meanwhile.

    Raises:
        CacheWriteError: The cache cannot be written.
    """
    cache = VolumeCache(cache_root)
    with _cache_writes(cache), cache.claim(source.key, wait=wait) as claimed:
        if not claimed:
            return CLAIMED, {}
        current = cache.record(source.key)
        if current is not None and current != planned:
            return BY_OTHER_RUN, current
        record = process(source, config, cache_root)
        cache.write_record(record)  # before the claim ends: no other run redoes the series
    return DONE, record


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
        _drop_replaced_failures(cache, sources)
        todo = _plan(cache, selected, retry_failed)
        summary = BuildSummary(total=len(selected), skipped=len(selected) - len(todo))
        if todo:
            cache.check_free_space(len(todo), config)
    start = time.perf_counter()
    try:
        with _SeriesProgress(console, progress, len(todo), shard) as advance:
            held = _count(summary, _run(todo, config, str(cache.root), num_workers), advance)
            if held:
                if progress:
                    console.print(f"waiting for {len(held)} series another run is processing")
                _count(summary, _run(held, config, str(cache.root), num_workers, True), advance)
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


_Task = tuple[SeriesSource, dict[str, Any] | None]
"""A series to process and its record when the run was planned."""


def _plan(cache: VolumeCache, selected: Sequence[SeriesSource], retry_failed: bool) -> list[_Task]:
    """The series still to process, each with the record it has now (``None``: none)."""
    todo: list[_Task] = []
    for source in selected:
        record = cache.record(source.key)
        if not is_done(cache, source, record, retry_failed):
            todo.append((source, record))
    return todo


def is_done(
    cache: VolumeCache, source: SeriesSource, record: dict[str, Any] | None, retry_failed: bool
) -> bool:
    """Whether ``source`` needs no processing: recorded ok with its array (and, when it has
    a segmentation, with the mask of that file), or failed and not to be retried."""
    if record is None:
        return False
    if record.get("status") == "ok":
        if source.mask and (
            record.get("mask_source") != source.mask
            or (record.get("mask") == "ok" and not cache.mask_path(source.key).exists())
        ):
            return False  # a segmentation added, moved or lost since: process it again
        return cache.volume_path(source.key).exists()
    return not retry_failed


def _drop_replaced_failures(cache: VolumeCache, sources: Sequence[SeriesSource]) -> None:
    """Delete the failed records of folders that now list their series.

    A folder that could not be listed (an RSNA patient folder, a FLARE sub-folder) was
    recorded as one failed entry for the folder; once the folder is readable the series
    under it are found, and the entry is obsolete.
    """
    keys = {s.key for s in sources}
    folders = {str(p) for s in sources if not s.error for p in Path(s.source).parents}
    for record in cache.records():
        key = str(record.get("key", ""))
        if record.get("status") != "ok" and key not in keys and record.get("source") in folders:
            cache.record_path(key).unlink(missing_ok=True)


def _count(
    summary: BuildSummary,
    outcomes: Iterator[tuple[str, dict[str, Any], _Task]],
    advance: Callable[[], None],
) -> list[_Task]:
    """Add the outcomes to ``summary``; return the series other runs held."""
    held = []
    for outcome, record, task in outcomes:
        if outcome == CLAIMED:
            held.append(task)
            continue
        if outcome == DONE:
            summary.processed += 1
        else:
            summary.by_other_run += 1
        if record.get("status") != "ok":
            summary.failed.append(record)
        elif record.get("mask") == "ok":
            summary.masks += 1
        elif record.get("mask") == "failed":
            summary.mask_failures.append(record)
        advance()
    return held


def _run(
    todo: list[_Task],
    config: PreprocessConfig,
    root: str,
    num_workers: int,
    wait_held: bool = False,
) -> Iterator[tuple[str, dict[str, Any], _Task]]:
    """Process ``todo`` here or in worker processes; yield ``(outcome, record, task)``.

    Args:
        wait_held: Wait for series other runs hold (else they come back as ``CLAIMED``).
    """

    def task_args(task: _Task) -> tuple[Any, ...]:
        # process_series is looked up now, so that a replaced function reaches the workers.
        return (process_series, task[0], config, root, task[1], wait_held)

    if num_workers <= 0 or len(todo) <= 1:
        for task in todo:
            yield (*claim_and_process(*task_args(task)), task)
        return
    context = worker_context()
    pool = ProcessPoolExecutor(
        max_workers=min(num_workers, len(todo)),
        mp_context=context,
        initializer=init_worker,
        initargs=(os.getpid(),),
    )
    try:
        pending: dict[Future[tuple[str, dict[str, Any]]], _Task] = {}
        queue = iter(todo)
        # Keep a bounded number of tasks in flight so a huge data set does not queue up at once.
        for task in queue:
            pending[pool.submit(claim_and_process, *task_args(task))] = task
            if len(pending) >= 4 * num_workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                yield (*future.result(), task)
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(claim_and_process, *task_args(nxt))] = nxt
    finally:
        # On an error (or an interrupt) the queued series are dropped, not run to the end.
        pool.shutdown(wait=True, cancel_futures=True)


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
    # Paths and error messages are printed as they are: brackets in them are not markup.
    console.print(
        escape(
            f"cache {cache.root}: {summary.ok} preprocessed"
            + (f" ({summary.by_other_run} by another run)" if summary.by_other_run else "")
            + f", {summary.skipped} already done, {len(summary.failed)} failed "
            f"({rate:.2f} series/s); manifest: {cache.manifest_path}"
        )
    )
    if summary.masks or summary.mask_failures:
        console.print(
            f"organ masks: {summary.masks} cached in {cache.masks_dir}"
            + (f", {len(summary.mask_failures)} not usable:" if summary.mask_failures else ""),
            markup=False,
            highlight=False,
        )
        for record in summary.mask_failures[:20]:
            reason = next(
                (w for w in str(record["warnings"]).split(" | ") if "segmentation" in w), ""
            )
            console.print(f"  {record['key']}: {reason}", markup=False, highlight=False)
    if summary.failed:
        table = Table(title=f"{len(summary.failed)} failed series (see manifest.csv)")
        table.add_column("key")
        table.add_column("error", overflow="fold")
        for record in summary.failed[:20]:
            table.add_row(escape(str(record["key"])), escape(str(record["error"])))
        console.print(table)
