"""Reusing a folder that holds a synthetic cohort made with other parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctvoco.errors import UserError
from ctvoco.synth.cohort import CohortSpec, make_synthetic_cohort


def existing_cohort(root: Path, **spec: object) -> Path:
    """A folder whose ``cohort.json`` records ``spec`` (no files are rendered)."""
    root.mkdir(parents=True)
    (root / "cohort.json").write_text(json.dumps(CohortSpec(**spec).as_json()))  # type: ignore[arg-type]
    return root


def test_other_parameters_are_named_with_both_values(tmp_path: Path) -> None:
    root = existing_cohort(tmp_path / "cohort", n_patients=24, seed=0)
    with pytest.raises(UserError) as caught:
        make_synthetic_cohort(root, n_patients=96, seed=1, progress=False)
    message = str(caught.value)
    assert str(root) in message
    assert "n_patients: existing 24, requested 96; seed: existing 0, requested 1" in message
    assert "n_flare" not in message  # equal parameters are not listed
    assert not (root / "rsna").exists()


def test_a_parameter_the_folder_does_not_record_is_named(tmp_path: Path) -> None:
    root = tmp_path / "cohort"
    root.mkdir()
    recorded = CohortSpec(n_patients=2).as_json()
    del recorded["prevalence"]
    (root / "cohort.json").write_text(json.dumps(recorded))
    with pytest.raises(UserError, match="prevalence: existing not recorded, requested None"):
        make_synthetic_cohort(root, n_patients=2, progress=False)
