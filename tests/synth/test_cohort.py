"""make_synthetic_cohort: the RSNA DICOM tree, the label tables and the FLARE NIfTI tree."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import RLELossless

import ctvoco.synth.cohort as cohort_module
from ctvoco.data.rsna import read_rsna_labels, read_series_meta
from ctvoco.errors import UserError
from ctvoco.io import read_dicom_series, read_nifti
from ctvoco.labels import TARGET_CLASSES, TARGETS
from ctvoco.synth import ORGAN_CODES
from ctvoco.synth.cohort import FLARE_STORAGE, make_synthetic_cohort

SPEC = {
    "n_patients": 3,
    "n_flare": len(FLARE_STORAGE),
    "seed": 5,
    "shape": (16, 48, 48),
    "second_series_fraction": 0.5,
}


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make_recording_phantoms(root: Path, spec: dict) -> tuple:
    """The cohort made under ``root``, plus every phantom rendered for it, in order."""
    rendered = []
    real = cohort_module.render_volume

    def recording(*args, **kwargs):
        phantom = real(*args, **kwargs)
        rendered.append(phantom)
        return phantom

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cohort_module, "render_volume", recording)
        cohort = make_synthetic_cohort(root, progress=False, **spec)
    return cohort, rendered


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The cohort, plus every phantom rendered for it (in order: RSNA series, then FLARE)."""
    return make_recording_phantoms(tmp_path_factory.mktemp("a"), SPEC)


@pytest.fixture(scope="module")
def cohort(made):
    return made[0]


def series_folders(cohort) -> list[Path]:
    return sorted(p for p in (cohort.rsna_root / "train_images").glob("*/*") if p.is_dir())


# ------------------------------------------------------------------------ RSNA layout


def test_rsna_layout_and_series_table(cohort):
    folders = series_folders(cohort)
    meta = read_series_meta(cohort.rsna_root / "train_series_meta.csv")
    assert {(int(f.parent.name), int(f.name)) for f in folders} == set(
        zip(meta["patient_id"], meta["series_id"], strict=True)
    )
    assert list(meta.columns) == ["patient_id", "series_id", "aortic_hu", "incomplete_organ"]
    per_patient = meta.groupby("patient_id").size()
    assert len(per_patient) == SPEC["n_patients"]
    assert set(per_patient) == {1, 2}, "some patients have one series, some two"
    for folder in folders:
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(f"{n}.dcm" for n in range(1, SPEC["shape"][0] + 1))


def test_dicom_files_carry_rsna_tags_and_no_order_in_their_names(cohort):
    spacing = cohort.spec.voxel_spacing
    for folder in series_folders(cohort):
        files = sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem))
        datasets = [pydicom.dcmread(p) for p in files]
        z = []
        for path, ds in zip(files, datasets, strict=True):
            assert ds.file_meta.TransferSyntaxUID == RLELossless == "1.2.840.10008.1.2.5"
            assert ds.Modality == "CT" and ds.PatientID == folder.parent.name
            assert int(ds.InstanceNumber) == int(path.stem)
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert [float(v) for v in ds.PixelSpacing] == pytest.approx(spacing[1:])
            assert float(ds.SliceThickness) == pytest.approx(spacing[0])
            assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024.0
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            x, y, _ = (float(v) for v in ds.ImagePositionPatient)
            # In-plane the field of view is centred on the isocentre (0, 0).
            assert x == pytest.approx(-(ds.Columns - 1) / 2 * spacing[2], abs=1e-3)
            assert y == pytest.approx(-(ds.Rows - 1) / 2 * spacing[1], abs=1e-3)
            z.append(float(ds.ImagePositionPatient[2]))
        steps = np.diff(z)
        assert not (np.all(steps > 0) or np.all(steps < 0)), "file names carry no slice order"
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
        assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
        assert np.allclose(np.diff(sorted(z)), spacing[0])


def test_dicom_series_read_back_as_rendered(made):
    cohort, rendered = made
    meta = read_series_meta(cohort.rsna_root / "train_series_meta.csv")
    for (patient, series), phantom in zip(
        meta[["patient_id", "series_id"]].to_numpy(), rendered, strict=False
    ):
        volume = read_dicom_series(cohort.rsna_root / "train_images" / str(patient) / str(series))
        np.testing.assert_array_equal(volume.hu, phantom.hu)
        assert volume.spacing == pytest.approx(cohort.spec.voxel_spacing)
        assert volume.warnings == []


def test_labels_are_one_hot_with_a_consistent_any_injury(cohort):
    raw = pd.read_csv(cohort.rsna_root / "train.csv")
    labels = read_rsna_labels(cohort.rsna_root / "train.csv")  # validates one-hot and any
    assert len(labels) == SPEC["n_patients"]
    healthy = raw[[f"{t}_healthy" for t in TARGETS]].to_numpy()
    np.testing.assert_array_equal(raw["any_injury"], (healthy == 0).any(axis=1).astype(int))
    for target, names in TARGET_CLASSES.items():
        np.testing.assert_array_equal(raw[[f"{target}_{n}" for n in names]].sum(axis=1), 1)
    assert sorted(raw["patient_id"]) == sorted(
        int(p.name) for p in (cohort.rsna_root / "train_images").iterdir()
    )


# ------------------------------------------------------------------------ FLARE layout


def flare_paths(cohort) -> list[Path]:
    return [cohort.flare_root / "imagesTr" / f"{case}_0000.nii.gz" for case in cohort.flare_cases]


def test_flare_files_are_int16_anisotropic_and_stored_along_varied_axes(cohort):
    codes = set()
    for path in flare_paths(cohort):
        image = nib.load(path)
        assert image.get_data_dtype() == np.int16
        linear = image.affine[:3, :3]
        zooms = np.linalg.norm(linear, axis=0)
        assert len(set(np.round(zooms, 4))) == 2, "in-plane spacing differs from z spacing"
        codes.add(nib.aff2axcodes(image.affine))
    assert len(codes) == len(FLARE_STORAGE), "every case is stored another way"
    assert ("R", "A", "S") not in codes


def test_flare_volumes_read_back_in_canonical_orientation(made):
    """Whatever the storage, slice 0 is cranial, row 0 anterior, column 0 patient right."""
    cohort, rendered = made
    phantoms = rendered[-len(cohort.flare_cases) :]
    for path, phantom in zip(flare_paths(cohort), phantoms, strict=True):
        volume = read_nifti(path)
        np.testing.assert_array_equal(volume.hu, phantom.hu)
        assert volume.spacing == pytest.approx(phantom.spacing)
        organs = phantom.organs
        w = organs.shape[2]
        liver = np.argwhere(organs == ORGAN_CODES["liver"]).mean(axis=0)
        lung = np.argwhere(organs == ORGAN_CODES["lung"]).mean(axis=0)
        body = np.argwhere(~np.isin(organs, [ORGAN_CODES["outside"], ORGAN_CODES["table"]]))
        body = body.mean(axis=0)
        midline = np.argwhere(organs == ORGAN_CODES["bone"])
        midline = midline[np.abs(midline[:, 2] - (w - 1) / 2) < w / 10]
        assert liver[2] < (w - 1) / 2, f"{path.name}: the liver is on the patient's right"
        assert midline[:, 1].mean() > body[1], f"{path.name}: the spine is posterior"
        assert lung[0] < liver[0], f"{path.name}: the lungs are cranial of the liver"
        # Patient z decreases from slice 0 (cranial) on.
        assert np.all(np.diff(volume.positions) < 0)


def test_flare_body_is_centred_near_the_isocentre(cohort):
    for path in flare_paths(cohort):
        image = nib.load(path)
        data = np.asarray(image.dataobj)
        centre = image.affine @ np.r_[(np.array(data.shape) - 1) / 2, 1.0]
        assert np.all(np.abs(centre[:2]) <= 10.0 + 1e-6), centre
        body = np.argwhere(data > -300)
        world = image.affine[:3, :3] @ body.T + image.affine[:3, 3:4]
        assert abs(world[0].mean()) < 30.0, f"{path.name}: body far from x = 0 mm"


# ------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_bytes_other_seed_other_bytes(cohort, tmp_path):
    again = make_synthetic_cohort(tmp_path / "again", progress=False, **SPEC)
    first, second = file_hashes(cohort.root), file_hashes(again.root)
    assert first == second
    other = make_synthetic_cohort(tmp_path / "other", progress=False, **{**SPEC, "seed": 6})
    third = file_hashes(other.root)
    flare = [k for k in first if k.startswith("flare/")]
    assert flare and all(first[k] != third[k] for k in flare)
    assert set(first.values()).isdisjoint(third[k] for k in third if k.endswith(".dcm"))


def test_existing_cohort_is_reused_and_other_parameters_refused(cohort):
    before = file_hashes(cohort.root)
    reused = make_synthetic_cohort(cohort.root, progress=False, **SPEC)
    assert reused.flare_cases == cohort.flare_cases
    assert file_hashes(cohort.root) == before
    with pytest.raises(UserError, match="other parameters"):
        make_synthetic_cohort(cohort.root, progress=False, **{**SPEC, "seed": 99})


def test_bad_prevalence_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="prevalence"):
        make_synthetic_cohort(tmp_path, progress=False, prevalence={"liver": [1.0]})


# ------------------------------------------------------------------------ ctvoco-synth


def run_synth(monkeypatch, tmp_path: Path, *args: str) -> int:
    """``ctvoco-synth args...`` in this process; its exit status."""
    from ctvoco.cli.synth import main

    argv = ["ctvoco-synth", f"paths.output_dir={tmp_path / 'run'}", *args]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_synth_program_takes_a_prevalence(tmp_path, monkeypatch, capsys):
    healthy = "{bowel:[1,0],extravasation:[1,0],kidney:[1,0,0],liver:[1,0,0],spleen:[1,0,0]}"
    common = ["n_patients=4", "n_flare=0", "shape=[8,32,32]", "second_series_fraction=0"]
    status = run_synth(
        monkeypatch, tmp_path, f"root={tmp_path / 'c'}", *common, f"prevalence={healthy}"
    )
    assert status == 0, capsys.readouterr().err
    labels = pd.read_csv(tmp_path / "c" / "rsna" / "train.csv")
    assert len(labels) == 4 and (labels["any_injury"] == 0).all()

    status = run_synth(
        monkeypatch, tmp_path, f"root={tmp_path / 'd'}", *common, "prevalence={liver:[0.5]}"
    )
    assert status == 2
    assert "prevalence['liver'] must be 3" in capsys.readouterr().err


def test_prevalence_option_keeps_defaults_for_targets_left_out():
    from ctvoco.cli.synth import prevalence_option
    from ctvoco.synth import DEFAULT_PREVALENCE

    assert prevalence_option(None) is None
    chosen = prevalence_option({"liver": [0.5, 0.3, 0.2]})
    assert chosen == {**DEFAULT_PREVALENCE, "liver": (0.5, 0.3, 0.2)}
    with pytest.raises(UserError, match="prevalence"):
        prevalence_option([0.5, 0.5])


def test_summary_prints_a_path_with_brackets_as_it_is(tmp_path):
    from io import StringIO

    from rich.console import Console

    out = StringIO()
    root = tmp_path / "[bold]cohort[/bold] [x]"
    tiny = {**SPEC, "n_patients": 2, "n_test": 0, "n_flare": 0}
    make_synthetic_cohort(root, console=Console(file=out, width=400), **tiny)
    assert f"in {root} (" in out.getvalue()
