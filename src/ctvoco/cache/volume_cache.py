"""The volume cache: preprocessed series on disk, one ``.npy`` per series, plus a manifest.

Layout of a cache directory::

    cache.json             the preprocessing variant (fingerprint) every array was made with
    volumes/<key>.npy      uint8 arrays, C-contiguous, loadable with mmap
    masks/<key>.npy        uint8 organ labels on the voxels of volumes/<key>.npy, for the
                           series that have a segmentation (RSNA's ``segmentations/``)
    records/<key>.json     one record per processed series (status ok or failed)
    locks/<key>.lock       empty lock files: who is processing a series right now
    manifest.csv           all records as one table, rebuilt at the end of every run

Keys are ``<patient_id>_<series_id>`` for RSNA and ``<case_id>`` for FLARE. Every file is
written to a temporary name and renamed into place, so a killed run never leaves a partial
array under a final name; a re-run skips the series that are done. Runs sharing a cache
(at the same time, on one or several hosts) claim a series through its lock file
(:meth:`VolumeCache.claim`, an OS file lock that ends with its process), so each series is
processed once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctvoco.errors import DataError, UserError
from ctvoco.io.atomic import TMP_MARK, atomic_write, tmp_owner, write_text_atomic
from ctvoco.io.series import check_key
from ctvoco.preprocessing.pipeline import ADDED_OPTIONS, PreprocessConfig

if TYPE_CHECKING:
    import pandas as pd

MANIFEST_COLUMNS = (
    "key",
    "patient_id",
    "series_id",
    "source",
    "status",
    "error",
    "warnings",
    "original_shape",
    "spacing",
    "crop_box",
    "windows",
    "shape",
    "mask",
    "seconds",
)
"""The manifest's columns. ``mask`` is ``ok`` (cached), ``failed`` (the reason is among the
warnings) or empty (the series has no segmentation)."""


class CacheWriteError(UserError):
    """The cache directory cannot be written (disk full, read-only, no permission).

    Unlike a bad series, this stops the whole build: every later series would fail the same
    way. Finished series stay in the cache, so a re-run resumes once the disk is fixed.
    """


def cache_write_error(root: Path, exc: OSError) -> CacheWriteError:
    """The error for an ``OSError`` raised while writing to the cache at ``root``."""
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return CacheWriteError(
        f"cannot write to the cache directory {root}: {reason}{where}; free space there, make "
        "it writable or set data.cache_dir= to another directory (finished series are kept "
        "and a re-run resumes)"
    )


class VolumeCache:
    """A cache directory of preprocessed series (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- layout -----------------------------------------------------------------------
    @property
    def volumes_dir(self) -> Path:
        """``<root>/volumes``."""
        return self.root / "volumes"

    @property
    def masks_dir(self) -> Path:
        """``<root>/masks``."""
        return self.root / "masks"

    @property
    def records_dir(self) -> Path:
        """``<root>/records``."""
        return self.root / "records"

    @property
    def locks_dir(self) -> Path:
        """``<root>/locks``."""
        return self.root / "locks"

    @property
    def manifest_path(self) -> Path:
        """``<root>/manifest.csv``."""
        return self.root / "manifest.csv"

    @property
    def variant_path(self) -> Path:
        """``<root>/cache.json``."""
        return self.root / "cache.json"

    def volume_path(self, key: str) -> Path:
        """Where the array of ``key`` lives."""
        return self.volumes_dir / f"{check_key(key)}.npy"

    def mask_path(self, key: str) -> Path:
        """Where the organ mask of ``key`` lives."""
        return self.masks_dir / f"{check_key(key)}.npy"

    def record_path(self, key: str) -> Path:
        """Where the record of ``key`` lives."""
        return self.records_dir / f"{check_key(key)}.json"

    def lock_path(self, key: str) -> Path:
        """The lock file through which runs claim ``key``."""
        return self.locks_dir / f"{check_key(key)}.lock"

    @contextlib.contextmanager
    def claim(self, key: str, *, wait: bool = False) -> Iterator[bool]:
        """Hold the claim on series ``key`` while the block runs.

        The claim is an OS lock on :meth:`lock_path` (``flock`` where the file system has
        it): it is released when the block ends or when its process dies, however it dies,
        so a killed run never leaves a stale claim. The lock file itself stays.

        Args:
            key: The series.
            wait: Wait until another holder is done instead of yielding ``False``.

        Yields:
            ``True`` when this process holds the claim, ``False`` when another process (or
            another claim of this one) holds it and ``wait`` is false.

        Raises:
            OSError: The lock file cannot be created (the cache is not writable).
        """
        from filelock import FileLock, Timeout  # not at module level: only builds need it

        path = self.lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path, timeout=-1 if wait else 0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    # -- variant ----------------------------------------------------------------------
    def variant(self) -> dict[str, Any] | None:
        """The fingerprint this cache was built with, or ``None`` for a new cache."""
        if not self.variant_path.exists():
            return None
        return json.loads(self.variant_path.read_text())

    def ensure_variant(self, config: PreprocessConfig) -> None:
        """Claim a new cache for ``config``, or check an existing one was built with it.

        Raises:
            UserError: The cache holds arrays of another preprocessing variant; mixing them
                would silently change the data, so the user must pick another directory.
        """
        wanted = config.fingerprint()
        existing = self.variant()
        if existing is not None:
            # options added later: an older cache.json was built with their default
            existing = {**ADDED_OPTIONS, **existing}
        if existing is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(
                    f"cannot create the cache directory {self.root} ({exc.strerror or exc}); set "
                    "data.cache_dir= to a writable directory"
                ) from exc
            try:
                write_text_atomic(self.variant_path, json.dumps(wanted, indent=2, sort_keys=True))
            except OSError as exc:
                raise cache_write_error(self.root, exc) from exc
            return
        if existing != wanted:
            changed = sorted(
                k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k)
            )
            detail = ", ".join(f"{k}: {existing.get(k)} -> {wanted.get(k)}" for k in changed)
            settable = [k for k in changed if k in PreprocessConfig.__dataclass_fields__]
            back = (
                ", or set "
                + " ".join(f"data.preprocess.{k}={_override(existing.get(k))}" for k in settable)
                + " to use it"
                if settable
                else ""
            )
            raise UserError(
                f"the cache at {self.root} was built with other preprocessing ({detail}); "
                f"use a new data.cache_dir for this variant or delete the old cache{back}"
            )

    # -- arrays -----------------------------------------------------------------------
    def has(self, key: str) -> bool:
        """True when ``key`` was processed successfully and its array is present."""
        record = self.record(key)
        return bool(record and record.get("status") == "ok" and self.volume_path(key).exists())

    def load(self, key: str, mmap: bool = True) -> np.ndarray:
        """The cached array of ``key``, memory-mapped read-only by default."""
        return load_array(
            self.volume_path(key), mmap, "not in the cache (run ctvoco-preprocess first)"
        )

    def write(self, key: str, array: np.ndarray) -> Path:
        """Store ``array`` under ``key`` atomically (temporary file, then rename)."""
        return save_array(self.volume_path(key), array)

    def has_mask(self, key: str) -> bool:
        """True when ``key`` is cached with its organ mask."""
        record = self.record(key) or {}
        return (
            record.get("status") == "ok"
            and record.get("mask") == "ok"
            and self.volume_path(key).exists()
            and self.mask_path(key).exists()
        )

    def load_mask(self, key: str, mmap: bool = True) -> np.ndarray:
        """The cached organ mask of ``key``, memory-mapped read-only by default."""
        return load_array(self.mask_path(key), mmap, f"no organ mask cached for {key}")

    def write_mask(self, key: str, labels: np.ndarray) -> Path:
        """Store the organ mask of ``key`` atomically."""
        return save_array(self.mask_path(key), np.asarray(labels, dtype=np.uint8))

    def mask_keys(self) -> list[str]:
        """Keys cached with their organ mask."""
        frame = self.manifest()
        keys = frame.loc[(frame["status"] == "ok") & (frame["mask"] == "ok"), "key"].astype(str)
        return [k for k in keys if self.volume_path(k).exists() and self.mask_path(k).exists()]

    # -- records and manifest -----------------------------------------------------------
    def record(self, key: str) -> dict[str, Any] | None:
        """The record of ``key``, or ``None``."""
        path = self.record_path(key)
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def write_record(self, record: Mapping[str, Any]) -> None:
        """Store one series' record atomically."""
        path = self.record_path(str(record["key"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(dict(record), sort_keys=True))

    def records(self) -> list[dict[str, Any]]:
        """Every record, sorted by key."""
        if not self.records_dir.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.records_dir.glob("*.json"))]

    def rebuild_manifest(self) -> pd.DataFrame:
        """Write ``manifest.csv`` from the records and return it."""
        import pandas as pd  # not at module level: preprocessing workers never need it

        frame = pd.DataFrame(self.records(), columns=list(MANIFEST_COLUMNS))
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.manifest_path, frame.to_csv(index=False))
        return frame

    def manifest(self) -> pd.DataFrame:
        """The manifest table (rebuilt from records when the CSV is missing or stale)."""
        import pandas as pd

        frame = None
        if self.manifest_path.exists():
            text = dict.fromkeys(
                ("key", "patient_id", "series_id", "error", "warnings", "mask"), str
            )
            frame = pd.read_csv(self.manifest_path, dtype=text, keep_default_na=False)
            stale = len(frame) != len(list(self.records_dir.glob("*.json")))
            if stale or "mask" not in frame.columns:  # a manifest written before masks
                frame = None
        if frame is None:
            frame = self.rebuild_manifest()
        for column in ("error", "warnings", "mask"):
            # an all-empty column reads as float NaN: make it text without casting NaN to "nan"
            frame[column] = [("" if pd.isna(v) else str(v)) for v in frame[column]]
        return frame

    def ready_keys(self) -> list[str]:
        """Keys whose arrays are present and whose records say ``ok``."""
        frame = self.manifest()
        keys = frame.loc[frame["status"] == "ok", "key"].astype(str)
        return [k for k in keys if self.volume_path(k).exists()]

    # -- housekeeping -------------------------------------------------------------------
    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files left by killed runs of this host (live writers are kept)."""
        removed = []
        host = socket.gethostname()
        for folder in (self.root, self.volumes_dir, self.masks_dir, self.records_dir):
            if not folder.exists():
                continue
            for path in folder.glob(f"*{TMP_MARK}*"):
                owner = tmp_owner(path)
                if owner is not None and owner[0] == host and not pid_alive(owner[1]):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    removed.append(path)
        return removed

    def check_free_space(self, n_series: int, config: PreprocessConfig) -> None:
        """Fail early when the disk cannot hold ``n_series`` more arrays.

        Raises:
            UserError: Not enough free space under the cache directory.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        needed = n_series * int(np.prod(config.output_shape)) + 4096 * n_series
        free = shutil.disk_usage(self.root).free
        if needed > free:
            raise UserError(
                f"not enough disk space in {self.root}: {n_series} series need about "
                f"{needed / 2**30:.2f} GiB, {free / 2**30:.2f} GiB free; free space or set "
                "data.cache_dir= elsewhere"
            )


def load_array(path: Path, mmap: bool, missing: str) -> np.ndarray:
    """A ``.npy`` array of the cache, memory-mapped read-only with ``mmap``.

    Raises:
        DataError: ``path`` does not exist (``missing`` says what that means).
    """
    if not path.exists():
        raise DataError(f"{path}: {missing}")
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def save_array(path: Path, array: np.ndarray) -> Path:
    """Store ``array`` at ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    return path


def _override(value: Any) -> str:
    """A fingerprint value as a command-line override value (``[[-175.0,250.0]]``, ``null``)."""
    return "null" if value is None else json.dumps(value, separators=(",", ":")).lower()


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` of this host exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def keys_in(records: Iterable[Mapping[str, Any]], status: str) -> set[str]:
    """Keys of the records with the given status."""
    return {str(r["key"]) for r in records if r.get("status") == status}
