from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from ctvoco.cache import VolumeCache, build_cache, builder, parse_shard, select_shard
from ctvoco.errors import UserError
from ctvoco.io import write_nifti
from ctvoco.io.series import SeriesSource
from ctvoco.preprocessing import PreprocessConfig
from tests.conftest import body_phantom

CONFIG = PreprocessConfig(shape=(6, 24, 24))
ROOT = Path(__file__).resolve().parents[2]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def write_cases(root, n: int) -> list[SeriesSource]:
    sources = []
    for i in range(n):
        path = write_nifti(
            body_phantom(seed=i), root / f"CASE_{i:04d}_0000.nii.gz", (5.0, 4.0, 4.0)
        )
        sources.append(SeriesSource(f"CASE_{i:04d}", str(path), f"CASE_{i:04d}"))
    return sources


def checksums(cache: VolumeCache) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(cache.volumes_dir.iterdir())
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, (0, 1)), ("", (0, 1)), ("0/4", (0, 4)), ("3/4", (3, 4)), ((1, 2), (1, 2))],
)
def test_parse_shard(text, expected) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "-1/2", "a/b", "3"])
def test_parse_shard_rejects(text) -> None:
    with pytest.raises(UserError, match="shard"):
        parse_shard(text)


def test_shards_partition_the_sources() -> None:
    sources = [SeriesSource(f"{i}_{i}", f"/x/{i}") for i in range(11)]
    parts = [select_shard(sources, (i, 3)) for i in range(3)]
    keys = [s.key for part in parts for s in part]
    assert sorted(keys) == sorted(s.key for s in sources)
    assert len(set(keys)) == len(keys)


def test_build_records_failures_and_finishes_healthy_series(tmp_path) -> None:
    sources = write_cases(tmp_path / "raw", 3)
    broken = tmp_path / "raw" / "BROKEN_0000.nii.gz"
    broken.write_bytes(b"not a nifti file")
    sources.append(SeriesSource("BROKEN", str(broken)))
    cache = VolumeCache(tmp_path / "cache")
    summary = build_cache(sources, cache, CONFIG, console=quiet())
    assert (summary.total, summary.ok, len(summary.failed)) == (4, 3, 1)
    manifest = pd.read_csv(cache.manifest_path)
    failed = manifest[manifest["status"] == "failed"]
    assert list(failed["key"]) == ["BROKEN"]
    assert str(broken) in failed["error"].iloc[0]
    ok = manifest[manifest["status"] == "ok"]
    assert set(ok.columns) >= {"original_shape", "spacing", "crop_box", "windows", "seconds"}
    assert (ok["original_shape"] == "12x48x56").all()
    assert cache.load("CASE_0000").shape == (6, 24, 24)


def test_rerun_skips_done_series_and_retries_failures(tmp_path) -> None:
    sources = write_cases(tmp_path / "raw", 2)
    cache = VolumeCache(tmp_path / "cache")
    build_cache(sources, cache, CONFIG, console=quiet())
    again = build_cache(sources, cache, CONFIG, console=quiet())
    assert (again.skipped, again.processed) == (2, 0)
    cache.volume_path("CASE_0001").unlink()
    repaired = build_cache(sources, cache, CONFIG, console=quiet())
    assert repaired.processed == 1 and cache.has("CASE_0001")


def test_config_change_is_refused(tmp_path) -> None:
    sources = write_cases(tmp_path / "raw", 1)
    cache = VolumeCache(tmp_path / "cache")
    build_cache(sources, cache, CONFIG, console=quiet())
    with pytest.raises(UserError, match="other preprocessing"):
        build_cache(sources, cache, PreprocessConfig(shape=(6, 32, 32)), console=quiet())


def test_parallel_and_sharded_builds_equal_serial(tmp_path) -> None:
    sources = write_cases(tmp_path / "raw", 4)
    serial = VolumeCache(tmp_path / "serial")
    build_cache(sources, serial, CONFIG, console=quiet())
    parallel = VolumeCache(tmp_path / "parallel")
    build_cache(sources, parallel, CONFIG, num_workers=2, console=quiet())
    sharded = VolumeCache(tmp_path / "sharded")
    for i in range(3):
        build_cache(sources, sharded, CONFIG, shard=(i, 3), console=quiet())
    assert checksums(serial) == checksums(parallel) == checksums(sharded)
    assert len(sharded.manifest()) == 4


def test_arrays_are_uint8_and_deterministic(tmp_path) -> None:
    sources = write_cases(tmp_path / "raw", 1)
    a, b = VolumeCache(tmp_path / "a"), VolumeCache(tmp_path / "b")
    build_cache(sources, a, CONFIG, console=quiet())
    build_cache(sources, b, CONFIG, console=quiet())
    assert a.load("CASE_0000").dtype == np.uint8
    assert checksums(a) == checksums(b)


# ------------------------------------------------------------------ unexpected errors


def test_unexpected_error_of_one_series_is_recorded_and_the_run_finishes(
    tmp_path, monkeypatch
) -> None:
    sources = write_cases(tmp_path / "raw", 3)
    real = builder.preprocess_volume

    def flaky(volume, config):
        if volume.source.endswith("CASE_0001_0000.nii.gz"):
            raise RuntimeError("a bug met on this volume")
        return real(volume, config)

    monkeypatch.setattr(builder, "preprocess_volume", flaky)
    cache = VolumeCache(tmp_path / "cache")
    summary = build_cache(sources, cache, CONFIG, console=quiet())
    assert (summary.ok, len(summary.failed)) == (2, 1)
    record = cache.record("CASE_0001")
    assert record is not None and record["status"] == "failed"
    assert record["error"] == (
        f"{sources[1].source}: unexpected RuntimeError: a bug met on this volume"
    )
    assert cache.has("CASE_0000") and cache.has("CASE_0002")


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupts_are_not_recorded_as_failures(tmp_path, monkeypatch, interrupt) -> None:
    sources = write_cases(tmp_path / "raw", 2)

    def stop(volume, config):
        raise interrupt()

    monkeypatch.setattr(builder, "preprocess_volume", stop)
    cache = VolumeCache(tmp_path / "cache")
    with pytest.raises(interrupt):
        build_cache(sources, cache, CONFIG, console=quiet())
    assert cache.records() == []


# ------------------------------------------------------------------ unwritable cache


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EROFS, "Read-only file system"),
        (errno.EACCES, "Permission denied"),
    ],
)
def test_unwritable_cache_stops_the_build_naming_data_cache_dir(
    tmp_path, monkeypatch, code, reason
) -> None:
    sources = write_cases(tmp_path / "raw", 3)
    cache = VolumeCache(tmp_path / "cache")
    build_cache(sources[:1], cache, CONFIG, console=quiet())
    attempts = []

    def full_disk(self, key, array):
        attempts.append(key)
        raise OSError(code, os.strerror(code), str(self.volume_path(key)))

    monkeypatch.setattr(VolumeCache, "write", full_disk)
    with pytest.raises(UserError) as info:
        build_cache(sources, cache, CONFIG, console=quiet())
    message = str(info.value)
    assert str(cache.root) in message and "data.cache_dir" in message
    assert reason in message
    assert attempts == ["CASE_0001"], "the build stops at the first failed write"
    assert [r["key"] for r in cache.records()] == ["CASE_0000"], "no failure was recorded"
    assert cache.has("CASE_0000")

    monkeypatch.undo()
    resumed = build_cache(sources, cache, CONFIG, console=quiet())
    assert (resumed.skipped, resumed.ok) == (1, 2)


def test_unwritable_records_stop_the_build(tmp_path, monkeypatch) -> None:
    sources = write_cases(tmp_path / "raw", 2)
    cache = VolumeCache(tmp_path / "cache")

    def full_disk(self, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(VolumeCache, "write_record", full_disk)
    with pytest.raises(UserError, match=r"No space left on device.*data\.cache_dir="):
        build_cache(sources, cache, CONFIG, console=quiet())


# ------------------------------------------------------------------ light workers

PROBE = """
import json, os, sys
import ctvoco.cli.preprocess  # what the console script imports before calling main()

from ctvoco.cache import builder, VolumeCache, build_cache
from ctvoco.io.series import SeriesSource
from ctvoco.preprocessing import PreprocessConfig
from tests.cache import worker_probe

if __name__ == "__main__":
    builder.process_series = worker_probe.process_series
    sources = [SeriesSource(k, s) for k, s in json.loads(sys.argv[1])]
    cache = VolumeCache(sys.argv[2])
    build_cache(sources, cache, PreprocessConfig(shape=(6, 24, 24)), num_workers=2, progress=False)
    print(json.dumps({"parent": os.getpid(), "records": cache.records()}))
"""


def test_preprocessing_workers_do_not_import_torch(tmp_path) -> None:
    """Workers start from the console script's module (forkserver re-imports it): neither
    that module nor anything a worker runs may load torch."""
    sources = write_cases(tmp_path / "raw", 3)
    script = tmp_path / "ctvoco_preprocess_like.py"
    script.write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            json.dumps([(s.key, s.source) for s in sources]),
            str(tmp_path / "cache"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    records = report["records"]
    assert sorted(r["key"] for r in records) == [s.key for s in sources]
    for record in records:
        assert record["status"] == "ok", record["error"]
        assert record["worker_pid"] != report["parent"], "ran in a worker process"
        assert record["heavy_modules"] == [], f"a worker imported {record['heavy_modules']}"


def test_preprocess_program_module_imports_no_data_modules() -> None:
    """The console script's module leaves the data modules (torch, Lightning) to main()."""
    code = "import sys, ctvoco.cli.preprocess; print('ctvoco.data.datamodules' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"


def test_unwritable_cache_stops_a_parallel_build(tmp_path) -> None:
    """A worker's failed write reaches the parent as the same user error."""
    sources = write_cases(tmp_path / "raw", 3)
    cache = VolumeCache(tmp_path / "cache")
    cache.ensure_variant(CONFIG)
    cache.volumes_dir.write_text("")  # a file where the arrays go: every write fails
    with pytest.raises(UserError, match=r"cannot write to the cache directory .*data\.cache_dir="):
        build_cache(sources, cache, CONFIG, num_workers=2, console=quiet())
    assert cache.records() == [], "no series was recorded as failed"
