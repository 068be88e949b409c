from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from ctvoco.cache import VolumeCache
from ctvoco.errors import DataError, UserError
from ctvoco.io.series import check_key
from ctvoco.preprocessing import PreprocessConfig

KEY_CASES = [
    ("10004_21057", True),
    ("FLARE23_0001", True),
    ("a.b-c", True),
    ("../etc", False),
    ("a/b", False),
    ("", False),
    (".hidden", False),
    ("x" * 200, False),
]


@pytest.mark.parametrize(("key", "valid"), KEY_CASES)
def test_check_key(key: str, valid: bool) -> None:
    if valid:
        assert check_key(key) == key
    else:
        with pytest.raises(DataError, match="invalid cache key"):
            check_key(key)


def test_write_load_mmap_roundtrip(tmp_path) -> None:
    cache = VolumeCache(tmp_path)
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    cache.write("1_2", array)
    loaded = cache.load("1_2")
    assert isinstance(loaded, np.memmap)
    assert not loaded.flags.writeable
    assert loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, array)
    assert list(cache.volumes_dir.iterdir()) == [cache.volume_path("1_2")]


def test_load_missing_names_the_file(tmp_path) -> None:
    with pytest.raises(DataError, match="not in the cache"):
        VolumeCache(tmp_path).load("9_9")


def test_variant_is_claimed_then_enforced(tmp_path) -> None:
    cache = VolumeCache(tmp_path)
    cache.ensure_variant(PreprocessConfig(shape=(8, 16, 16)))
    cache.ensure_variant(PreprocessConfig(shape=(8, 16, 16)))
    with pytest.raises(
        UserError, match=r"other preprocessing \(shape: \[8, 16, 16\] -> \[8, 32, 32\]\)"
    ):
        cache.ensure_variant(PreprocessConfig(shape=(8, 32, 32)))
    with pytest.raises(UserError, match="windows"):
        cache.ensure_variant(PreprocessConfig(shape=(8, 16, 16), windows=[(-175, 250)]))


def test_records_and_manifest(tmp_path) -> None:
    cache = VolumeCache(tmp_path)
    cache.write("1_2", np.zeros((2, 2, 2), np.uint8))
    cache.write_record({"key": "1_2", "patient_id": "1", "series_id": "2", "status": "ok"})
    cache.write_record(
        {"key": "3_4", "patient_id": "3", "series_id": "4", "status": "failed", "error": "boom"}
    )
    manifest = cache.rebuild_manifest()
    assert list(manifest["key"]) == ["1_2", "3_4"]
    assert cache.manifest_path.exists()
    assert cache.ready_keys() == ["1_2"]
    assert cache.has("1_2") and not cache.has("3_4")
    assert cache.manifest().loc[1, "error"] == "boom"


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path) -> None:
    cache = VolumeCache(tmp_path)
    cache.volumes_dir.mkdir(parents=True)
    host = socket.gethostname()
    dead = cache.volumes_dir / f".1_2.npy.tmp-{host}-999999999"
    alive = cache.volumes_dir / f".3_4.npy.tmp-{host}-{os.getpid()}"
    other_host = cache.volumes_dir / ".5_6.npy.tmp-elsewhere-999999999"
    for path in (dead, alive, other_host):
        path.write_bytes(b"partial")
    removed = cache.remove_stale_temporaries()
    assert removed == [dead]
    assert alive.exists() and other_host.exists()


def test_free_space_check_names_the_path(tmp_path, monkeypatch) -> None:
    import shutil

    cache = VolumeCache(tmp_path / "c")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(UserError, match=f"not enough disk space in {tmp_path / 'c'}"):
        cache.check_free_space(10, PreprocessConfig())
