"""RSNA layout discovery and the label / series files (every bad input is a real file)."""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctvoco.data.rsna import parse_id, read_rsna_labels, read_series_meta, rsna_series
from ctvoco.errors import DataError, UserError
from ctvoco.labels import LABEL_COLUMNS, PREDICTION_COLUMNS
from tests.data.conftest import label_row, write_csv

VALID_ROWS = [
    label_row(30, spleen=2),
    label_row(10),
    label_row(20, kidney=1, bowel=1),
]


def mutate(rows: list[dict], index: int, **changes: object) -> list[dict]:
    """A copy of ``rows`` with row ``index`` changed."""
    out = [dict(r) for r in rows]
    out[index].update(changes)
    return out


# -- parse_id ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12), ("12", 12), (" 12 ", 12), ("12.0", 12), (12.0, 12), ("0007", 7), (0, 0)],
)
def test_parse_id_accepts_integers(value, expected) -> None:
    assert parse_id(value, "patient_id", "x.csv:2") == expected


@pytest.mark.parametrize("value", ["abc", "-3", "1.5", "", "nan", float("nan"), "1e3", "12a"])
def test_parse_id_rejects_non_integers(value) -> None:
    with pytest.raises(DataError, match=r"^x\.csv:7: patient_id must be a non-negative integer"):
        parse_id(value, "patient_id", "x.csv:7")


def test_parse_id_rejects_unicode_digits() -> None:
    with pytest.raises(DataError, match=r"x\.csv:2"):
        parse_id("²", "patient_id", "x.csv:2")


# -- read_rsna_labels: valid files -------------------------------------------------------
def test_labels_round_trip_sorted_with_any_injury(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", VALID_ROWS)
    labels = read_rsna_labels(path)
    assert list(labels.columns) == ["patient_id", *LABEL_COLUMNS]
    assert labels["patient_id"].tolist() == [10, 20, 30]
    assert labels["patient_id"].dtype == np.int64
    assert all(labels[c].dtype == np.int64 for c in LABEL_COLUMNS)
    expected = pd.DataFrame(VALID_ROWS).sort_values("patient_id", ignore_index=True)
    pd.testing.assert_frame_equal(labels, expected[labels.columns], check_dtype=False)


def test_labels_derive_any_injury_when_absent(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", VALID_ROWS, ["patient_id", *PREDICTION_COLUMNS])
    labels = read_rsna_labels(path)
    assert labels.set_index("patient_id")["any_injury"].to_dict() == {10: 0, 20: 1, 30: 1}


def test_labels_accept_float_formatted_values(tmp_path: Path) -> None:
    rows = [{k: (f"{v}.0" if k != "patient_id" else v) for k, v in r.items()} for r in VALID_ROWS]
    labels = read_rsna_labels(write_csv(tmp_path / "train.csv", rows))
    assert labels["spleen_high"].tolist() == [0, 0, 1]


def test_labels_read_the_synthetic_cohort(tiny_cohort) -> None:
    labels = read_rsna_labels(tiny_cohort.rsna_root / "train.csv")
    assert len(labels) == tiny_cohort.spec.n_patients
    assert labels["patient_id"].is_monotonic_increasing


# -- read_rsna_labels: bad files ---------------------------------------------------------
ALL_COLUMNS = ["patient_id", *LABEL_COLUMNS]
BAD_LABEL_FILES = [
    pytest.param(
        VALID_ROWS,
        [c for c in ALL_COLUMNS if c != "liver_low"],
        r"missing column\(s\) liver_low",
        id="missing-column",
    ),
    pytest.param(
        VALID_ROWS,
        [c for c in ALL_COLUMNS if c not in ("patient_id", "bowel_injury")],
        r"missing column\(s\) patient_id, bowel_injury",
        id="missing-columns-named",
    ),
    pytest.param(
        mutate(VALID_ROWS, 1, patient_id="abc"),
        ALL_COLUMNS,
        r"{path}:3: patient_id must be a non-negative integer; got 'abc'",
        id="non-integer-patient",
    ),
    pytest.param(
        mutate(VALID_ROWS, 2, patient_id=-20),
        ALL_COLUMNS,
        r"{path}:4: patient_id must be a non-negative integer",
        id="negative-patient",
    ),
    pytest.param(
        mutate(VALID_ROWS, 0, patient_id=""),
        ALL_COLUMNS,
        r"{path}:2: patient_id must be a non-negative integer; got nan",
        id="empty-patient",
    ),
    pytest.param(
        [*VALID_ROWS, label_row(10, liver=1), label_row(30)],
        ALL_COLUMNS,
        r"duplicate patient_id\(s\) 10, 30",
        id="duplicate-patients",
    ),
    pytest.param(
        [*VALID_ROWS, label_row("10.0")],
        ALL_COLUMNS,
        r"duplicate patient_id\(s\) 10",
        id="duplicate-after-float",
    ),
    pytest.param(
        mutate(VALID_ROWS, 1, kidney_low=2),
        ALL_COLUMNS,
        r"{path}:3: patient 10: kidney_low must be 0 or 1",
        id="value-2",
    ),
    pytest.param(
        mutate(VALID_ROWS, 2, bowel_injury="yes"),
        ALL_COLUMNS,
        r"{path}:4: patient 20: bowel_injury must be 0 or 1; got 'yes'",
        id="value-text",
    ),
    pytest.param(
        mutate(VALID_ROWS, 0, liver_high=""),
        ALL_COLUMNS,
        r"{path}:2: patient 30: liver_high must be 0 or 1",
        id="value-missing",
    ),
    pytest.param(
        mutate(VALID_ROWS, 2, kidney_healthy=1),
        ALL_COLUMNS,
        r"{path}:4: patient 20: the kidney columns \(kidney_healthy, kidney_low, kidney_high\) "
        r"must be one-hot; they sum to 2",
        id="two-hot",
    ),
    pytest.param(
        mutate(VALID_ROWS, 1, spleen_healthy=0),
        ALL_COLUMNS,
        r"{path}:3: patient 10: the spleen columns .* must be one-hot; they sum to 0",
        id="zero-hot",
    ),
    pytest.param(
        mutate(VALID_ROWS, 1, any_injury=1),
        ALL_COLUMNS,
        r"{path}:3: patient 10: any_injury=1 contradicts the target columns",
        id="any-injury-says-injured",
    ),
    pytest.param(
        mutate(VALID_ROWS, 0, any_injury=0),
        ALL_COLUMNS,
        r"{path}:2: patient 30: any_injury=0 contradicts the target columns",
        id="any-injury-says-healthy",
    ),
]


@pytest.mark.parametrize(("rows", "columns", "message"), BAD_LABEL_FILES)
def test_bad_label_files_are_named(tmp_path: Path, rows, columns, message) -> None:
    path = write_csv(tmp_path / "train.csv", rows, columns)
    with pytest.raises(DataError, match=message.replace("{path}", re.escape(str(path)))):
        read_rsna_labels(path)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00\x81\x9f" * 20 + b"\n" + b"\x81" * 10, id="binary"),
        pytest.param(
            (
                ",".join(ALL_COLUMNS) + "\n" + ",".join(["1"] * 15) + "\n" + ",".join(["1"] * 17)
            ).encode(),
            id="ragged",
        ),
    ],
)
def test_unreadable_label_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{re.escape(str(path))}: not a readable CSV file"):
        read_rsna_labels(path)


def test_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.csv: label file not found"):
        read_rsna_labels(tmp_path / "train.csv")


def test_bad_label_errors_are_user_errors(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", mutate(VALID_ROWS, 0, bowel_injury=5))
    with pytest.raises(UserError):
        read_rsna_labels(path)


def test_label_error_line_counts_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    header, good, bad = (
        write_csv(
            tmp_path / "rows.csv", [label_row(10), {**label_row(20, kidney=1), "any_injury": 0}]
        )
        .read_text()
        .splitlines()
    )
    path.write_text("\n".join([header, good, "", bad]) + "\n")  # the bad row is on line 4
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:4: patient 20: any_injury"):
        read_rsna_labels(path)


# -- read_series_meta --------------------------------------------------------------------
def test_series_meta_reads_integer_ids(tmp_path: Path) -> None:
    path = tmp_path / "train_series_meta.csv"
    path.write_text("patient_id,series_id,aortic_hu\n10,100,150.0\n10.0,101,140\n20,200,130\n")
    meta = read_series_meta(path)
    assert meta["patient_id"].tolist() == [10, 10, 20]
    assert meta["series_id"].tolist() == [100, 101, 200]
    assert meta.groupby("patient_id").size().to_dict() == {10: 2, 20: 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("patient_id,aortic_hu\n10,1\n", r"missing column\(s\) series_id"),
        ("series_id,aortic_hu\n10,1\n", r"missing column\(s\) patient_id"),
        ("patient_id,series_id\n10,100\nten,101\n", r"{path}:3: patient_id must be"),
        ("patient_id,series_id\n10,100\n11,1.5\n", r"{path}:3: series_id must be .*'?1\.5"),
        ("patient_id,series_id\n10,\n", r"{path}:2: series_id must be"),
    ],
)
def test_bad_series_meta_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "train_series_meta.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message.replace("{path}", re.escape(str(path)))):
        read_series_meta(path)


def test_empty_series_meta_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "train_series_meta.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"train_series_meta\.csv"):
        read_series_meta(path)


# -- layout discovery --------------------------------------------------------------------
def make_tree(root: Path, split: str, folders: list[str], files: list[str] = ()) -> Path:
    """Series folders (with one real, empty-named slice file each) and stray files."""
    for folder in folders:
        (root / f"{split}_images" / folder).mkdir(parents=True, exist_ok=True)
        (root / f"{split}_images" / folder / "1.dcm").write_bytes(b"DICM")
    for name in files:
        path = root / f"{split}_images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not a series")
    return root


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_images_dir_says_how_to_get_the_data(tmp_path: Path, split: str) -> None:
    with pytest.raises(UserError, match=rf"{split}_images") as info:
        rsna_series(tmp_path / "nowhere", split)
    message = str(info.value)
    assert "kaggle competitions download -c rsna-2023-abdominal-trauma-detection" in message
    assert "data.root" in message
    assert str((tmp_path / "nowhere").resolve()) in message


def test_unknown_split_is_a_user_error(tmp_path: Path) -> None:
    make_tree(tmp_path, "train", ["1/2"])
    with pytest.raises(UserError, match=r"^split must be one of train, test; got 'val'"):
        rsna_series(tmp_path, "val")


def test_series_keys_and_ids(tmp_path: Path) -> None:
    make_tree(tmp_path, "train", ["10/200", "10/100", "7/5", "0042/0003"])
    sources = rsna_series(tmp_path)
    assert [s.key for s in sources] == ["42_3", "10_100", "10_200", "7_5"]
    by_key = {s.key: s for s in sources}
    assert by_key["10_100"].patient_id == "10"
    assert by_key["10_100"].series_id == "100"
    assert by_key["10_100"].source == str(tmp_path / "train_images" / "10" / "100")
    assert by_key["42_3"].patient_id == "42"


def test_non_integer_folders_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    make_tree(
        tmp_path,
        "train",
        ["10/100", "abc/1", "10/series_x", "11/12"],
        files=["README.txt", "10/notes.txt"],
    )
    (tmp_path / "train_images" / ".DS_Store").write_text("hidden")
    (tmp_path / "train_images" / "10" / ".hidden").mkdir()
    with caplog.at_level(logging.WARNING, logger="ctvoco.data.rsna"):
        sources = rsna_series(tmp_path)
    assert [s.key for s in sources] == ["10_100", "11_12"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 4 entries" in warnings[0]
    for name in ("abc", "10/series_x", "README.txt", "10/notes.txt"):
        assert name in warnings[0]
    assert ".DS_Store" not in warnings[0]
    assert ".hidden" not in warnings[0]


def test_clean_tree_logs_no_warning(tmp_path: Path, caplog) -> None:
    make_tree(tmp_path, "train", ["1/2"])
    with caplog.at_level(logging.WARNING, logger="ctvoco.data.rsna"):
        rsna_series(tmp_path)
    assert not caplog.records


def test_unicode_digit_folders_are_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path, "train", ["10/100", "²/1"])
    assert [s.key for s in rsna_series(tmp_path)] == ["10_100"]


def test_synthetic_cohort_series_match_the_meta_tables(tiny_cohort) -> None:
    for split in ("train", "test"):
        meta = read_series_meta(tiny_cohort.rsna_root / f"{split}_series_meta.csv")
        expected = {f"{p}_{s}" for p, s in meta[["patient_id", "series_id"]].to_numpy()}
        assert {s.key for s in rsna_series(tiny_cohort.rsna_root, split)} == expected
    test_patients = {s.patient_id for s in rsna_series(tiny_cohort.rsna_root, "test")}
    assert len(test_patients) == tiny_cohort.spec.n_test


# -- unreadable folders ------------------------------------------------------------------
def deny_listing(monkeypatch, *folders: Path) -> None:
    """Listing ``folders`` fails as it does for a folder of mode 000 (for any user but root)."""
    real = Path.iterdir
    denied = {Path(f) for f in folders}

    def iterdir(self: Path):
        if self in denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)


def test_unreadable_patient_folder_becomes_a_failing_source(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    make_tree(tmp_path, "train", ["10/100", "10/101", "11/12"])
    patient = tmp_path / "train_images" / "10"
    deny_listing(monkeypatch, patient)
    with caplog.at_level(logging.WARNING, logger="ctvoco.data.rsna"):
        sources = rsna_series(tmp_path)
    assert [s.key for s in sources] == ["10", "11_12"]
    unreadable, readable = sources
    assert (unreadable.patient_id, unreadable.series_id) == ("10", "")
    assert unreadable.source == str(patient)
    assert unreadable.error.startswith(f"{patient}: cannot list the patient folder")
    assert "Permission denied" in unreadable.error
    assert readable.error == ""
    assert any(str(patient) in r.getMessage() for r in caplog.records)


def test_unreadable_images_folder_is_a_user_error(tmp_path: Path, monkeypatch) -> None:
    make_tree(tmp_path, "train", ["10/100"])
    deny_listing(monkeypatch, tmp_path / "train_images")
    with pytest.raises(UserError, match=r"train_images: cannot list .*Permission denied"):
        rsna_series(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists folders whatever their mode")
def test_patient_folder_of_mode_000(tmp_path: Path) -> None:
    make_tree(tmp_path, "train", ["10/100", "11/12"])
    patient = tmp_path / "train_images" / "10"
    patient.chmod(0)
    try:
        sources = rsna_series(tmp_path)
    finally:
        patient.chmod(0o755)
    assert [s.key for s in sources] == ["10", "11_12"]
    assert "Permission denied" in sources[0].error
