"""Bad input through the whole cache build, on DICOM trees in the RSNA layout.

Every bad series becomes a ``failed`` manifest row naming its file, the healthy series are
cached, and a re-run resumes: the finished series are skipped.
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import MPEG2MPML
from rich.console import Console

from ctvoco.cache import VolumeCache, build_cache
from ctvoco.data.rsna import rsna_series
from ctvoco.preprocessing import PreprocessConfig
from tests.conftest import small_phantom as phantom
from tests.io.test_dicom import (
    SHAPE,
    delete,
    edit,
    set_syntax,
    set_value,
    uncompressed_pixels,
    write_series,
)

CONFIG = PreprocessConfig(shape=(6, 24, 24))


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def series_folder(root: Path, patient: int, series: int) -> Path:
    return root / "train_images" / str(patient) / str(series)


def add_series(
    root: Path, patient: int, series: int, damage: Callable[[Path, list[Path]], Path | None]
) -> tuple[str, Path | None]:
    """Write one healthy series, apply ``damage(folder, paths)``; return its key and the
    file (or folder) its error must name (``None``: the series is healthy)."""
    folder = series_folder(root, patient, series)
    paths = write_series(folder, phantom(seed=series), name=f"{patient}-{series}", compress=True)
    return f"{patient}_{series}", damage(folder, paths)


def healthy(folder: Path, paths: list[Path]) -> None:
    return None


def header_change(index: int, change) -> Callable[[Path, list[Path]], Path]:
    def damage(folder: Path, paths: list[Path]) -> Path:
        edit(paths[index], change)
        return paths[index]

    return damage


def corrupt_file(folder: Path, paths: list[Path]) -> Path:
    garbage = folder / "garbage.dcm"
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    return garbage


def truncated_pixels(folder: Path, paths: list[Path]) -> Path:
    def cut(ds):
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = encapsulate([frame[: len(frame) // 2]])

    edit(paths[7], cut)
    return paths[7]


def intruder(source: Path) -> Callable[[Path, list[Path]], Path]:
    """Copy a file of another series (``source``) into the folder."""

    def damage(folder: Path, paths: list[Path]) -> Path:
        target = folder / "from_other_series.dcm"
        shutil.copy(source, target)
        return target

    return damage


def duplicate_with_other_pixels(folder: Path, paths: list[Path]) -> Path:
    copy = folder / "copy.dcm"
    shutil.copy(paths[5], copy)

    def change(ds):
        pixels = ds.pixel_array.copy()
        pixels[10, 10] += 50
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        uncompressed_pixels(ds, pixels)

    edit(copy, change)
    return copy


def missing_slice(folder: Path, paths: list[Path]) -> None:
    paths[6].unlink()
    return None


def unsupported_syntax(folder: Path, paths: list[Path]) -> Path:
    set_syntax(paths[3], MPEG2MPML)
    return paths[3]


def rows_by_key(cache: VolumeCache) -> dict[str, pd.Series]:
    manifest = cache.manifest()
    return {str(row["key"]): row for _, row in manifest.iterrows()}


# ------------------------------------------------------------------ malformed headers

# (name, file index in slice order, change, tag the error names)
MALFORMED = [
    ("no_rows", 7, delete("Rows"), "Rows"),
    (
        "position_two_values",
        4,
        set_value("ImagePositionPatient", [1.0, 2.0]),
        "ImagePositionPatient",
    ),
    ("spacing_one_value", 0, set_value("PixelSpacing", [0.7]), "PixelSpacing"),
    (
        "orientation_five_values",
        2,
        set_value("ImageOrientationPatient", [1, 0, 0, 0, 1]),
        "ImageOrientationPatient",
    ),
]


@pytest.fixture(scope="module")
def malformed_tree(tmp_path_factory) -> tuple[Path, dict[str, tuple[Path | None, str]]]:
    """One healthy series and one series per malformed header."""
    root = tmp_path_factory.mktemp("malformed")
    expected: dict[str, tuple[Path | None, str]] = {}
    key, _ = add_series(root, 10001, 1, healthy)
    expected[key] = (None, "")
    for i, (_, index, change, tag) in enumerate(MALFORMED):
        key, bad = add_series(root, 10002 + i, 2 + i, header_change(index, change))
        expected[key] = (bad, tag)
    return root, expected


@pytest.mark.parametrize("num_workers", [0, 2])
def test_malformed_headers_fail_their_series_only(malformed_tree, tmp_path, num_workers):
    root, expected = malformed_tree
    sources = rsna_series(root)
    cache = VolumeCache(tmp_path / "cache")

    summary = build_cache(sources, cache, CONFIG, num_workers=num_workers, console=quiet())

    assert (summary.total, summary.ok, len(summary.failed)) == (5, 1, 4)
    rows = rows_by_key(cache)
    for key, (bad, tag) in expected.items():
        if bad is None:
            assert rows[key]["status"] == "ok"
            assert cache.load(key).shape == CONFIG.shape
        else:
            assert rows[key]["status"] == "failed", key
            assert rows[key]["error"].startswith(f"{bad}: {tag} "), rows[key]["error"]

    good = cache.volume_path("10001_1")
    written = good.stat().st_mtime_ns
    again = build_cache(sources, cache, CONFIG, num_workers=num_workers, console=quiet())
    assert (again.skipped, again.processed, len(again.failed)) == (1, 4, 4)
    assert good.stat().st_mtime_ns == written
    resumed = build_cache(sources, cache, CONFIG, retry_failed=False, console=quiet())
    assert (resumed.skipped, resumed.processed) == (5, 0)


# ------------------------------------------------------------------ header against pixels, HU


def every_file(change) -> Callable[[Path, list[Path]], Path]:
    """Apply ``change`` to every file; the error must name one of them (the folder is
    returned, its files are all alike)."""

    def damage(folder: Path, paths: list[Path]) -> Path:
        for path in paths:
            edit(path, change)
        return folder

    return damage


def huge_image_size(ds) -> None:
    ds.Rows, ds.Columns = 65535, 65535


def no_rescale_tags(ds) -> None:
    del ds.RescaleSlope
    del ds.RescaleIntercept


def test_header_and_rescale_defects_fail_their_series_only(tmp_path):
    root = tmp_path / "raw"
    add_series(root, 10001, 1, healthy)
    add_series(root, 10002, 2, every_file(huge_image_size))
    add_series(root, 10003, 3, every_file(no_rescale_tags))  # unsigned: HU + 1024 stored
    _, slope_zero = add_series(root, 10004, 4, header_change(3, set_value("RescaleSlope", 0)))
    signed = series_folder(root, 10005, 5)
    write_series(signed, phantom(seed=5), name="10005-5", signed=True, rescale_intercept=0.0)
    for path in sorted(signed.iterdir()):
        edit(path, no_rescale_tags)
    cache = VolumeCache(tmp_path / "cache")

    summary = build_cache(rsna_series(root), cache, CONFIG, console=quiet())

    assert (summary.ok, len(summary.failed)) == (2, 3)
    rows = rows_by_key(cache)
    assert rows["10001_1"]["status"] == "ok" and rows["10001_1"]["warnings"] == ""
    huge = rows["10002_2"]
    assert huge["status"] == "failed"
    assert huge["error"].startswith(f"{series_folder(root, 10002, 2)}/"), huge["error"]
    assert "Rows=65535" in huge["error"] and "Columns=65535" in huge["error"], huge["error"]
    shifted = rows["10003_3"]
    assert shifted["status"] == "failed"
    assert shifted["error"].startswith(f"{series_folder(root, 10003, 3)}: "), shifted["error"]
    assert "not Hounsfield units" in shifted["error"]
    assert rows["10004_4"]["status"] == "failed"
    assert rows["10004_4"]["error"].startswith(f"{slope_zero}: RescaleSlope must not be 0")
    unscaled = rows["10005_5"]
    assert unscaled["status"] == "ok", unscaled["error"]
    assert "no RescaleSlope" in unscaled["warnings"] and str(signed) in unscaled["warnings"]
    assert cache.has("10005_5")


def test_unreadable_patient_folder_fails_its_series_and_the_run_finishes(
    tmp_path, monkeypatch, capsys
):
    """A patient folder that cannot be listed is one failed row; every other series is cached."""
    from tests.data.test_rsna import deny_listing

    root = tmp_path / "raw"
    add_series(root, 10001, 1, healthy)
    add_series(root, 10002, 2, healthy)
    add_series(root, 10003, 3, healthy)
    patient = root / "train_images" / "10002"
    deny_listing(monkeypatch, patient)
    cache_dir = tmp_path / "cache"
    status = run_preprocess(
        monkeypatch,
        f"data.root={root}",
        f"data.cache_dir={cache_dir}",
        "data.preprocess.shape=[6,24,24]",
        "num_workers=0",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    assert status == 1, capsys.readouterr().err
    cache = VolumeCache(cache_dir)
    rows = rows_by_key(cache)
    assert set(rows) == {"10001_1", "10002", "10003_3"}
    assert rows["10002"]["status"] == "failed"
    assert rows["10002"]["error"].startswith(f"{patient}: cannot list the patient folder")
    assert "Permission denied" in rows["10002"]["error"]
    assert cache.has("10001_1") and cache.has("10003_3")

    monkeypatch.undo()  # the folder is readable again
    again = build_cache(rsna_series(root), cache, CONFIG, console=quiet())
    assert (again.ok, len(again.failed)) == (1, 0)
    assert set(rows_by_key(cache)) == {"10001_1", "10002_2", "10003_3"}, "the folder row went"


# ------------------------------------------------------------------ every kind of bad input


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory) -> tuple[Path, dict[str, Path | None]]:
    """An RSNA tree: healthy series (one patient with two) and one series per defect."""
    root = tmp_path_factory.mktemp("bad_rsna")
    expected: dict[str, Path | None] = {}
    for patient, series in ((20001, 11), (20002, 12), (20002, 13)):
        key, _ = add_series(root, patient, series, healthy)
        expected[key] = None
    other = series_folder(root, 20001, 11) / "4.dcm"
    defects = [
        corrupt_file,
        truncated_pixels,
        intruder(other),
        duplicate_with_other_pixels,
        unsupported_syntax,
        header_change(4, set_value("ImagePositionPatient", [1.0, 2.0])),
    ]
    for i, damage in enumerate(defects):
        key, bad = add_series(root, 20010 + i, 30 + i, damage)
        expected[key] = bad
    gap_key, _ = add_series(root, 20020, 40, missing_slice)
    expected[gap_key] = None
    return root, expected


def check_bad_tree_cache(cache: VolumeCache, expected: dict[str, Path | None]) -> None:
    rows = rows_by_key(cache)
    assert set(rows) == set(expected)
    for key, bad in expected.items():
        row = rows[key]
        if bad is None:
            assert row["status"] == "ok", (key, row["error"])
            assert cache.has(key)
        else:
            assert row["status"] == "failed", key
            assert str(bad.name) in row["error"] and str(bad.parent) in row["error"], row["error"]
            assert not cache.volume_path(key).exists()
    gap = rows["20020_40"]
    assert "gap" in gap["warnings"] and "about 1 missing" in gap["warnings"]


def test_every_bad_series_is_a_failed_row_naming_its_file(bad_tree, tmp_path):
    root, expected = bad_tree
    sources = rsna_series(root)
    cache = VolumeCache(tmp_path / "cache")

    summary = build_cache(sources, cache, CONFIG, console=quiet())

    assert (summary.ok, len(summary.failed)) == (4, 6)
    check_bad_tree_cache(cache, expected)
    rows = rows_by_key(cache)
    assert "mixes 2 series" in rows["20012_32"]["error"]
    assert "share position" in rows["20013_33"]["error"]
    assert MPEG2MPML in rows["20014_34"]["error"]

    again = build_cache(sources, cache, CONFIG, retry_failed=False, console=quiet())
    assert (again.skipped, again.processed) == (10, 0)
    retried = build_cache(sources, cache, CONFIG, console=quiet())
    assert (retried.skipped, retried.processed, len(retried.failed)) == (4, 6, 6)
    check_bad_tree_cache(cache, expected)


def run_preprocess(monkeypatch, *args: str) -> int:
    """``ctvoco-preprocess args...`` in this process; its exit status."""
    from ctvoco.cli.preprocess import main

    monkeypatch.setattr(sys, "argv", ["ctvoco-preprocess", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_preprocess_cli_finishes_and_exits_1_when_series_fail(
    bad_tree, tmp_path, monkeypatch, capsys
):
    root, expected = bad_tree
    args = [
        "data.preprocess.shape=[6,24,24]",
        "num_workers=0",
        f"paths.output_dir={tmp_path / 'run'}",
    ]
    status = run_preprocess(
        monkeypatch, f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", *args
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "6 series failed" in out
    check_bad_tree_cache(VolumeCache(tmp_path / "cache"), expected)

    healthy_only = tmp_path / "healthy"
    for key, bad in expected.items():
        if bad is None:
            patient, series = (int(part) for part in key.split("_"))
            shutil.copytree(
                series_folder(root, patient, series), series_folder(healthy_only, patient, series)
            )
    status = run_preprocess(
        monkeypatch, f"data.root={healthy_only}", f"data.cache_dir={tmp_path / 'cache2'}", *args
    )
    assert status == 0, capsys.readouterr().err


def test_healthy_series_of_the_tree_match_their_phantoms(bad_tree):
    """The tree's healthy series really are readable (the defects are the only problem)."""
    from ctvoco.io import read_dicom_series

    root, _ = bad_tree
    volume = read_dicom_series(series_folder(root, 20002, 13))
    np.testing.assert_array_equal(volume.hu, phantom(seed=13))
    assert volume.shape == SHAPE
