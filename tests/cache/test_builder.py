from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from ctvoco.cache import SeriesSource, VolumeCache, build_cache, parse_shard, select_shard
from ctvoco.errors import UserError
from ctvoco.io import write_nifti
from ctvoco.preprocessing import PreprocessConfig
from tests.conftest import body_phantom

CONFIG = PreprocessConfig(shape=(6, 24, 24))


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
