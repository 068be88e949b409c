"""Image-level labels: parsing, the instance-number -> cached-slice mapping, per-slice samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctvoco.cache.builder import process_series
from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.data.image_labels import (
    attach_slice_labels,
    read_image_level_labels,
    slice_targets,
)
from ctvoco.errors import DataError
from ctvoco.io.series import SeriesSource
from ctvoco.preprocessing.pipeline import PreprocessConfig
from ctvoco.synth.dicom_writer import SeriesTags, write_dicom_series
from tests.conftest import body_phantom

HEADER = "patient_id,series_id,instance_number,injury_name\n"


def _csv(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "image_level_labels.csv"
    path.write_text(HEADER + body)
    return path


def test_reads_rows_as_channels(tmp_path):
    path = _csv(tmp_path, "10,20,5,Bowel\n10,20,6,Active_Extravasation\n10,20,5,Bowel\n")
    frame = read_image_level_labels(path)
    assert frame.to_dict("records") == [
        {"patient_id": 10, "series_id": 20, "instance_number": 5, "channel": 0},
        {"patient_id": 10, "series_id": 20, "instance_number": 6, "channel": 1},
    ]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("10,20,5,Bowel\n10,20,6,Liver\n", r"image_level_labels.csv:3: injury_name must be"),
        ("10,20,x,Bowel\n", r"image_level_labels.csv:2: instance_number must be"),
        ("10,-2,5,Bowel\n", r"image_level_labels.csv:2: series_id must be"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path, body, match):
    with pytest.raises(DataError, match=match):
        read_image_level_labels(_csv(tmp_path, body))


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "image_level_labels.csv"
    path.write_text("patient_id,series_id,injury_name\n1,2,Bowel\n")
    with pytest.raises(DataError, match=r"missing column.*instance_number"):
        read_image_level_labels(path)


def test_slice_targets_follow_spans_when_shrinking():
    # 8 source slices (instance numbers 8..1, reversed), cropped to 2:8 and resized to 3.
    numbers = list(range(8, 0, -1))
    out = slice_targets({0: [6], 1: [1]}, numbers, (2, 8), 3)
    # instance 6 is source slice 2 -> cached slice 0; instance 1 is source slice 7 -> slice 2
    assert out.tolist() == [[1, 0], [0, 0], [0, 1]]


def _tiny_series(tmp_path: Path) -> tuple[VolumeCache, dict]:
    """A 12-slice DICOM series whose instance numbers run feet to head, preprocessed."""
    hu = body_phantom((12, 48, 56))
    folder = tmp_path / "rsna" / "train_images" / "7" / "70"
    tags = SeriesTags(patient_id="7", series_uid="1.2.3.4", study_uid="1.2.3")
    write_dicom_series(hu, folder, (5.0, 1.0, 1.0), tags, compress=False)
    cache = VolumeCache(tmp_path / "cache")
    config = PreprocessConfig(shape=(12, 32, 32), body_crop=False)
    cache.ensure_variant(config)
    record = process_series(SeriesSource("7_70", str(folder), "7", "70"), config, str(cache.root))
    assert record["status"] == "ok", record["error"]
    cache.write_record(record)
    return cache, record


def test_cache_record_keeps_instance_numbers_in_slice_order(tmp_path):
    _, record = _tiny_series(tmp_path)
    # the writer numbers instances from the feet up: slice 0 (cranial) is instance 12
    assert record["instance_numbers"] == list(range(12, 0, -1))


def test_reversed_instance_numbers_map_to_the_right_slices(tmp_path):
    cache, _ = _tiny_series(tmp_path)
    items = pd.DataFrame(
        [{"key": "7_70", "patient_id": "7", "series_id": "70", "bowel": 1, "extravasation": 0}]
    )
    image = pd.DataFrame(
        [
            {"patient_id": 7, "series_id": 70, "instance_number": 12, "channel": 0},
            {"patient_id": 7, "series_id": 70, "instance_number": 2, "channel": 0},
        ]
    )
    out = attach_slice_labels(items, image, cache.record, depth=12)
    labels = out.loc[0, "slice_labels"]
    assert labels.shape == (12, 2)
    assert np.flatnonzero(labels[:, 0]).tolist() == [0, 10]
    assert labels[:, 1].sum() == 0
    assert out.loc[0, "slice_known"].tolist() == [1.0, 1.0]  # extravasation: patient negative


def test_positive_series_without_rows_is_unknown_and_negative_patient_is_known():
    items = pd.DataFrame(
        [
            {"key": "1_10", "patient_id": "1", "series_id": "10", "bowel": 1, "extravasation": 1},
            {"key": "2_20", "patient_id": "2", "series_id": "20", "bowel": 0, "extravasation": 0},
        ]
    )
    empty = pd.DataFrame(columns=["patient_id", "series_id", "instance_number", "channel"])
    out = attach_slice_labels(items, empty, {}.get, depth=4)
    assert out.loc[0, "slice_known"].tolist() == [0.0, 0.0]
    assert out.loc[1, "slice_known"].tolist() == [1.0, 1.0]
    assert out.loc[1, "slice_labels"].sum() == 0


def test_a_row_contradicting_train_csv_is_a_data_error():
    items = pd.DataFrame(
        [{"key": "1_10", "patient_id": "1", "series_id": "10", "bowel": 0, "extravasation": 0}]
    )
    image = pd.DataFrame([{"patient_id": 1, "series_id": 10, "instance_number": 3, "channel": 0}])
    with pytest.raises(DataError, match="patient 1 has no bowel injury"):
        attach_slice_labels(items, image, {"1_10": {"crop_box": "0:4,0:4,0:4"}}.get, depth=4)


def test_dataset_yields_targets_of_the_slices_the_view_picks(tmp_path):
    from ctvoco.classify.views import SliceStackViews
    from ctvoco.data.dataset import CachedVolumeDataset

    cache, _ = _tiny_series(tmp_path)
    labels = np.zeros((12, 2), dtype=np.uint8)
    labels[11, 0] = 1  # the last slice, which floor(linspace(0, 11, 4)) picks
    labels[5, 1] = 1  # not picked
    items = pd.DataFrame(
        [
            {
                "key": "7_70",
                "cache": str(cache.root),
                "patient_id": "7",
                "series_id": "70",
                "bowel": 1,
                "extravasation": 1,
                "kidney": 0,
                "liver": 0,
                "spleen": 0,
                "slice_labels": labels,
                "slice_known": np.array([1.0, 0.0], dtype=np.float32),
            }
        ]
    )
    sample = CachedVolumeDataset(items, SliceStackViews.plain(num_slices=4, crop=32))[0]
    assert sample["slice_targets"].tolist() == [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]
    assert sample["slice_mask"].tolist() == [1.0, 0.0]


def test_the_data_module_option_picks_the_file(tmp_path):
    from ctvoco.data.datamodules import RSNADataModule
    from ctvoco.errors import UserError

    def module(value):
        return RSNADataModule(
            root=str(tmp_path), cache_dir=str(tmp_path / "c"), image_level_labels=value
        )

    assert module("auto").image_labels_path() is None  # no file under the root
    assert module(None).image_labels_path() is None
    path = _csv(tmp_path, "1,2,3,Bowel\n")
    assert module("auto").image_labels_path() == path
    assert module(None).image_labels_path() is None
    assert module(str(path)).image_labels_path() == path
    with pytest.raises(UserError, match=r"data\.image_level_labels: .*missing\.csv not found"):
        module(str(tmp_path / "missing.csv")).image_labels_path()
