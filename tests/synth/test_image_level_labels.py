"""The synthetic cohort's image_level_labels.csv names the images where lesions were drawn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctvoco.data.image_labels import read_image_level_labels
from ctvoco.io import read_dicom_series
from ctvoco.synth.labels import DEFAULT_PREVALENCE, INJURY_CODES
from tests.synth.test_cohort import make_recording_phantoms

SPEC = {
    "n_patients": 3,
    "n_flare": 0,
    "seed": 11,
    "shape": (16, 48, 48),
    "second_series_fraction": 0.0,
    "prevalence": {
        **{t: list(p) for t, p in DEFAULT_PREVALENCE.items()},
        "bowel": [0.0, 1.0],
        "extravasation": [0.0, 1.0],
    },
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_recording_phantoms(tmp_path_factory.mktemp("img"), SPEC)


def test_rows_are_the_instances_of_the_slices_showing_each_lesion(made):
    cohort, rendered = made
    rows = read_image_level_labels(cohort.rsna_root / "image_level_labels.csv")
    meta = pd.read_csv(cohort.rsna_root / "train_series_meta.csv")
    assert len(rows) > 0
    for (patient, series), phantom in zip(
        meta[["patient_id", "series_id"]].to_numpy(), rendered, strict=True
    ):
        volume = read_dicom_series(cohort.rsna_root / "train_images" / str(patient) / str(series))
        numbers = np.asarray(volume.instance_numbers)
        mine = rows[(rows["patient_id"] == patient) & (rows["series_id"] == series)]
        for channel, target in enumerate(("bowel", "extravasation")):
            shown = (phantom.injuries == INJURY_CODES[target]).any(axis=(1, 2))
            expected = sorted(numbers[shown].tolist())
            got = sorted(mine.loc[mine["channel"] == channel, "instance_number"].tolist())
            assert got == expected, (patient, series, target)


def test_every_row_belongs_to_a_patient_positive_for_that_injury(made):
    cohort, _ = made
    rows = read_image_level_labels(cohort.rsna_root / "image_level_labels.csv")
    labels = pd.read_csv(cohort.rsna_root / "train.csv").set_index("patient_id")
    for row in rows.itertuples():
        column = ("bowel_injury", "extravasation_injury")[row.channel]
        assert labels.loc[row.patient_id, column] == 1
