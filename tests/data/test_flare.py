"""FLARE23 layout discovery: case ids, patterns, missing data, duplicate cases."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from ctvoco.data.flare import flare_cases
from ctvoco.errors import DataError, UserError


def copy_case(tiny_cohort, target: Path) -> Path:
    """A real FLARE volume of the tiny cohort copied to ``target``."""
    source = sorted((tiny_cohort.flare_root / "imagesTr").glob("*_0000.nii.gz"))[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def test_cases_of_the_synthetic_cohort(tiny_cohort) -> None:
    sources = flare_cases(tiny_cohort.flare_root)
    assert [s.key for s in sources] == tiny_cohort.flare_cases
    assert [s.key for s in sources] == ["FLARE23_0001", "FLARE23_0002", "FLARE23_0003"]
    for source in sources:
        assert source.patient_id == source.key
        assert source.series_id == ""
        assert Path(source.source).name == f"{source.key}_0000.nii.gz"
        assert Path(source.source).is_file()


def test_cases_from_several_folders_sorted(tiny_cohort, tmp_path: Path) -> None:
    copy_case(tiny_cohort, tmp_path / "unlabelTr1800" / "FLARE23_2201_0000.nii.gz")
    copy_case(tiny_cohort, tmp_path / "imagesTr2200" / "FLARE23_0001_0000.nii.gz")
    copy_case(tiny_cohort, tmp_path / "imagesTr2200" / "nested" / "FLARE23_0002_0000.nii.gz")
    (tmp_path / "imagesTr2200" / "FLARE23_0001_0001.nii.gz").write_bytes(b"other channel")
    (tmp_path / "imagesTr2200" / "notes_0000.txt").write_text("not a volume")
    keys = [s.key for s in flare_cases(tmp_path)]
    assert sorted(keys) == ["FLARE23_0001", "FLARE23_0002", "FLARE23_2201"]


def test_custom_patterns(tiny_cohort, tmp_path: Path) -> None:
    copy_case(tiny_cohort, tmp_path / "a" / "CASE_7_0000.nii.gz")
    copy_case(tiny_cohort, tmp_path / "b" / "CASE_8_0000.nii.gz")
    assert [s.key for s in flare_cases(tmp_path, ["a/*.nii.gz"])] == ["CASE_7"]
    both = flare_cases(tmp_path, ["a/*.nii.gz", "b/*.nii.gz", "**/*_0000.nii.gz"])
    assert sorted(s.key for s in both) == ["CASE_7", "CASE_8"]


@pytest.mark.parametrize("make_root", ["missing", "empty", "wrong-files"])
def test_missing_data_says_how_to_get_flare(tmp_path: Path, make_root: str) -> None:
    root = tmp_path / "FLARE23"
    if make_root != "missing":
        root.mkdir()
    if make_root == "wrong-files":
        (root / "FLARE23_0001.nii.gz").write_bytes(b"no channel suffix")
        (root / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="FLARE23 data not found") as info:
        flare_cases(root)
    message = str(info.value)
    assert "data.root" in message
    assert "flare23.grand-challenge.org" in message
    assert str(root.resolve()) in message


def test_duplicate_case_ids_from_two_folders(tiny_cohort, tmp_path: Path) -> None:
    first = copy_case(tiny_cohort, tmp_path / "imagesTr2200" / "FLARE23_0005_0000.nii.gz")
    second = copy_case(tiny_cohort, tmp_path / "unlabelTr1800" / "FLARE23_0005_0000.nii.gz")
    with pytest.raises(DataError, match="case id FLARE23_0005 also comes from") as info:
        flare_cases(tmp_path)
    message = str(info.value)
    assert str(first) in message or str(second) in message
    assert re.search(r"imagesTr2200.*unlabelTr1800|unlabelTr1800.*imagesTr2200", message)


def test_duplicate_case_ids_from_two_extensions(tiny_cohort, tmp_path: Path) -> None:
    copy_case(tiny_cohort, tmp_path / "FLARE23_0009_0000.nii.gz")
    copy_case(tiny_cohort, tmp_path / "FLARE23_0009_0000.nii")
    with pytest.raises(DataError, match="FLARE23_0009"):
        flare_cases(tmp_path, ["*_0000.nii.gz", "*_0000.nii"])


def deny_scandir(monkeypatch, *folders: Path) -> None:
    """Listing ``folders`` fails as it does for a folder of mode 000 (for any user but root)."""
    real = os.scandir
    denied = {str(f) for f in folders}

    def scandir(path=".", *args, **kwargs):
        if str(path) in denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_folder_is_a_failing_source_not_skipped(
    tiny_cohort, tmp_path: Path, monkeypatch, caplog
) -> None:
    copy_case(tiny_cohort, tmp_path / "imagesTr2200" / "FLARE23_0001_0000.nii.gz")
    copy_case(tiny_cohort, tmp_path / "unlabelTr1800" / "1-500" / "FLARE23_2201_0000.nii.gz")
    denied = tmp_path / "unlabelTr1800" / "1-500"
    deny_scandir(monkeypatch, denied)
    with caplog.at_level(logging.WARNING, logger="ctvoco.data.flare"):
        sources = flare_cases(tmp_path)
    assert [s.key for s in sources] == ["FLARE23_0001", "unreadable.unlabelTr1800_1-500"]
    assert sources[0].error == ""
    assert str(denied) in sources[1].error and "Permission denied" in sources[1].error
    assert any(str(denied) in r.getMessage() for r in caplog.records)


def test_unreadable_folder_key_is_a_valid_cache_key(tmp_path: Path, monkeypatch) -> None:
    from ctvoco.io.series import check_key

    (tmp_path / "odd name [1]").mkdir()
    deny_scandir(monkeypatch, tmp_path / "odd name [1]")
    (source,) = flare_cases(tmp_path)
    assert check_key(source.key) == source.key


def test_a_folder_readable_again_replaces_its_failed_row(tiny_cohort, tmp_path, monkeypatch):
    from ctvoco.cache import VolumeCache, build_cache
    from tests.cache.test_bad_series import CONFIG, quiet, rows_by_key

    copy_case(tiny_cohort, tmp_path / "raw" / "imagesTr2200" / "FLARE23_0001_0000.nii.gz")
    nested = tmp_path / "raw" / "unlabelTr1800" / "1-500" / "a"
    copy_case(tiny_cohort, nested / "FLARE23_2201_0000.nii.gz")
    deny_scandir(monkeypatch, nested.parent)
    cache = VolumeCache(tmp_path / "cache")
    first = build_cache(flare_cases(tmp_path / "raw"), cache, CONFIG, console=quiet())
    assert (first.ok, len(first.failed)) == (1, 1)
    assert rows_by_key(cache)["unreadable.unlabelTr1800_1-500"]["status"] == "failed"

    monkeypatch.undo()  # the folder is readable again
    again = build_cache(flare_cases(tmp_path / "raw"), cache, CONFIG, console=quiet())
    assert (again.ok, len(again.failed)) == (1, 0)
    assert set(rows_by_key(cache)) == {"FLARE23_0001", "FLARE23_2201"}, "the folder row went"
