"""Per-slice image-level targets and ``data.preprocess.target_spacing`` do not mix."""

from __future__ import annotations

import pandas as pd
import pytest

from ctvoco.data import RSNADataModule
from ctvoco.errors import UserError


def module(tmp_path, image_level_labels):
    return RSNADataModule(
        root=str(tmp_path / "rsna"),
        cache_dir=str(tmp_path / "cache"),
        preprocess={"target_spacing": [5.0, 1.5]},
        image_level_labels=image_level_labels,
    )


def test_a_named_label_file_with_a_target_spacing_is_refused(tmp_path):
    labels = tmp_path / "image_level_labels.csv"
    labels.write_text("patient_id,series_id,instance_number,injury_name\n1,2,3,Bowel\n")
    with pytest.raises(UserError, match=r"data\.image_level_labels=.*target_spacing"):
        module(tmp_path, str(labels))._attach_image_labels(pd.DataFrame())


def test_auto_labels_with_a_target_spacing_are_left_out(tmp_path, caplog):
    (tmp_path / "rsna").mkdir()
    (tmp_path / "rsna" / "image_level_labels.csv").write_text(
        "patient_id,series_id,instance_number,injury_name\n1,2,3,Bowel\n"
    )
    items = pd.DataFrame({"key": ["1_2"]})
    assert module(tmp_path, "auto")._attach_image_labels(items) is items
    assert "not used" in caplog.text
