"""End-to-end tests of :func:`ctvoco.inference.predict_submission` on the tiny cohort.

A tiny classifier is trained once per module (1 epoch, ``test_efficientnet``) through the
real data module; predictions then run on copies of the cohort's ``test_images`` tree.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from ctvoco.classify import InferenceSpecFromData, InjuryClassifier, SliceStackViews
from ctvoco.classify.spec import CHECKPOINT_KEY, InferenceSpec
from ctvoco.cli.predict import merge_repeated
from ctvoco.data.datamodules import RSNADataModule
from ctvoco.errors import DataError, UserError
from ctvoco.inference import discover_input, load_classifier, predict_submission
from ctvoco.labels import PREDICTION_COLUMNS, TARGET_CLASSES, TARGETS, aggregate_predictions
from ctvoco.metrics import rsna_score
from tests.data.test_rsna import deny_listing
from tests.training.module_args import build

COLUMNS = list(PREDICTION_COLUMNS)


@dataclass
class Trained:
    checkpoint: Path
    other: Path
    prevalence: list[float]
    views: SliceStackViews


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory) -> Trained:
    """One tiny classifier trained for an epoch, and a second with shifted head biases."""
    root = tmp_path_factory.mktemp("classifier")
    views = SliceStackViews.plain(num_slices=4, crop=48)
    datamodule = RSNADataModule(
        root=str(tiny_cohort.rsna_root),
        cache_dir=str(root / "cache"),
        purpose="classify",
        preprocess={"shape": [16, 64, 64]},
        num_workers=0,
        batch_size=2,
        fold=None,
        views=SliceStackViews.plain(num_slices=4, crop=48, random_crop=True),
        val_views=views,
    )
    pl.seed_everything(0)
    module = build(InjuryClassifier, backbone="test_efficientnet", hidden=8, lr=1e-3)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[InferenceSpecFromData(datamodule)],  # as ctvoco-finetune does
    )
    trainer.fit(module, datamodule=datamodule)
    checkpoint = root / "a.ckpt"
    trainer.save_checkpoint(checkpoint)
    # A second checkpoint with other weights: the same file with shifted head biases.
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for target in TARGETS:
        bias = raw["state_dict"][f"net.heads.{target}.bias"]
        raw["state_dict"][f"net.heads.{target}.bias"] = bias + torch.linspace(-1.0, 1.5, len(bias))
    other = root / "b.ckpt"
    torch.save(raw, other)
    return Trained(checkpoint, other, datamodule.class_prevalence(), views)


@pytest.fixture
def test_images(tiny_cohort, tmp_path) -> Path:
    """A private copy of the cohort's ``test_images`` tree."""
    return Path(shutil.copytree(tiny_cohort.rsna_root / "test_images", tmp_path / "test_images"))


def _series_dirs(tree: Path, patient: str) -> list[Path]:
    return sorted(p for p in (tree / patient).iterdir() if p.is_dir())


def _two_series_patient(tree: Path) -> str:
    for patient in sorted(p.name for p in tree.iterdir() if p.is_dir()):
        if len(_series_dirs(tree, patient)) >= 2:
            return patient
    raise AssertionError("the tiny cohort should hold a test patient with two series")


def _corrupt(series_dir: Path) -> None:
    for dcm in series_dir.glob("*.dcm"):
        dcm.write_bytes(b"this is not a DICOM file")


def _check_submission(frame: pd.DataFrame, patients: list[int]) -> None:
    assert list(frame.columns) == ["patient_id", *COLUMNS]
    assert len(COLUMNS) == 13
    assert sorted(frame["patient_id"].tolist()) == sorted(patients)
    assert frame["patient_id"].is_unique
    start = 0
    for target in TARGETS:
        k = len(TARGET_CLASSES[target])
        sums = frame[COLUMNS[start : start + k]].sum(axis=1).to_numpy()
        np.testing.assert_allclose(sums, 1.0, atol=1e-9)
        start += k
    values = frame[COLUMNS].to_numpy()
    assert np.isfinite(values).all()
    assert ((values >= 0) & (values <= 1)).all()


def _normalised(row: np.ndarray) -> np.ndarray:
    out, start = row.astype(float).copy(), 0
    for target in TARGETS:
        k = len(TARGET_CLASSES[target])
        out[start : start + k] /= out[start : start + k].sum()
        start += k
    return out


# --------------------------------------------------------------------------- the checkpoint
def test_checkpoint_records_its_inference_spec(trained):
    model = load_classifier(trained.checkpoint, torch.device("cpu"))
    assert model.inference.preprocess.shape == (16, 64, 64)
    assert model.inference.views.num_slices == 4
    assert model.inference.views.crop == 48
    assert model.inference.views.random_crop is False
    np.testing.assert_allclose(model.inference.prevalence, trained.prevalence)
    assert len(trained.prevalence) == 13
    assert not model.training


# --------------------------------------------------------------------------- submissions
def test_submission_has_every_test_patient_once(trained, tiny_cohort, test_images, tmp_path):
    output = tmp_path / "out" / "submission.csv"
    result = predict_submission(
        [trained.checkpoint], test_images, output, cache_dir=tmp_path / "cache", device="cpu"
    )
    patients = tiny_cohort.test_labels["patient_id"].tolist()
    written = pd.read_csv(output)
    _check_submission(written, patients)
    _check_submission(result.submission, patients)
    np.testing.assert_allclose(written[COLUMNS].to_numpy(), result.submission[COLUMNS].to_numpy())
    n_series = sum(len(_series_dirs(test_images, str(p))) for p in patients)
    series = pd.read_csv(output.with_name("series_predictions.csv"))
    assert len(series) == len(result.series) == n_series
    assert not output.with_name("failed_series.csv").exists()
    assert result.failed_series == []
    assert result.fallback_patients == []
    # each patient's row is the column-wise max of its series, groups renormalised
    per_patient = aggregate_predictions(result.series.drop(columns="series_id"), "max")
    for _, row in per_patient.iterrows():
        got = result.submission.set_index("patient_id").loc[int(row["patient_id"]), COLUMNS]
        np.testing.assert_allclose(got.to_numpy(float), _normalised(row[COLUMNS].to_numpy()))
    # a valid submission for the metric
    assert np.isfinite(rsna_score(tiny_cohort.test_labels, written)["score"])


def test_the_parent_of_test_images_is_accepted(trained, test_images, tmp_path):
    a = predict_submission(
        [trained.checkpoint], test_images.parent, tmp_path / "a.csv", device="cpu"
    )
    b = predict_submission(
        [trained.checkpoint], test_images, tmp_path / "b" / "b.csv", device="cpu"
    )
    pd.testing.assert_frame_equal(a.submission, b.submission)


def test_mean_aggregation(trained, test_images, tmp_path):
    result = predict_submission(
        [trained.checkpoint], test_images, tmp_path / "s.csv", aggregate="mean", device="cpu"
    )
    mean = result.series.drop(columns="series_id").groupby("patient_id")[COLUMNS].mean()
    for pid, row in mean.iterrows():
        got = result.submission.set_index("patient_id").loc[int(pid), COLUMNS]
        np.testing.assert_allclose(got.to_numpy(float), _normalised(row.to_numpy()))


def test_submission_follows_sample_submission_order(trained, test_images, tmp_path):
    patients = sorted(int(p.name) for p in test_images.iterdir())
    pd.DataFrame({"patient_id": patients[::-1], **dict.fromkeys(COLUMNS, 0.5)}).to_csv(
        test_images.parent / "sample_submission.csv", index=False
    )
    result = predict_submission([trained.checkpoint], test_images, tmp_path / "s.csv", device="cpu")
    assert result.submission["patient_id"].tolist() == patients[::-1]


def test_sample_submission_ids_written_as_floats_are_accepted(trained, test_images, tmp_path):
    patients = sorted(int(p.name) for p in test_images.iterdir())
    listed = [f"{p}.0" for p in patients[::-1]]  # how pandas writes an int column with NaN
    pd.DataFrame({"patient_id": listed, **dict.fromkeys(COLUMNS, 0.5)}).to_csv(
        test_images.parent / "sample_submission.csv", index=False
    )
    result = predict_submission(
        [trained.checkpoint], test_images, tmp_path / "s.csv", tta=False, device="cpu"
    )
    assert result.submission["patient_id"].tolist() == patients[::-1]


@pytest.mark.parametrize("bad", ["12a", "-3", "1.5", ""])
def test_a_bad_sample_submission_id_names_its_row(trained, test_images, tmp_path, bad):
    patients = sorted(p.name for p in test_images.iterdir())
    sample = test_images.parent / "sample_submission.csv"
    pd.DataFrame({"patient_id": [patients[0], bad], **dict.fromkeys(COLUMNS, 0.5)}).to_csv(
        sample, index=False
    )
    with pytest.raises(DataError, match=r"sample_submission\.csv row 3: patient_id"):
        predict_submission(
            [trained.checkpoint], test_images, tmp_path / "s.csv", tta=False, device="cpu"
        )


def test_two_checkpoints_are_averaged(trained, test_images, tmp_path):
    runs = {}
    for name, checkpoints in (
        ("a", [trained.checkpoint]),
        ("b", [trained.other]),
        ("ab", [trained.checkpoint, trained.other]),
    ):
        result = predict_submission(
            checkpoints,
            test_images,
            tmp_path / name / "submission.csv",
            cache_dir=tmp_path / "cache",
            device="cpu",
        )
        runs[name] = result.series.set_index(["patient_id", "series_id"]).sort_index()[COLUMNS]
    assert not np.allclose(runs["a"].to_numpy(), runs["b"].to_numpy(), atol=1e-3)
    np.testing.assert_allclose(
        runs["ab"].to_numpy(), (runs["a"].to_numpy() + runs["b"].to_numpy()) / 2, atol=1e-6
    )


def _with_views(source: Path, target: Path, **views: int) -> Path:
    """A copy of checkpoint ``source`` that records other evaluation views."""
    raw = torch.load(source, map_location="cpu", weights_only=True)
    raw[CHECKPOINT_KEY]["views"].update(views)
    torch.save(raw, target)
    return target


def test_each_checkpoint_of_an_ensemble_sees_its_own_views(trained, test_images, tmp_path):
    six = _with_views(trained.other, tmp_path / "six.ckpt", num_slices=6, crop=40)
    assert load_classifier(six, torch.device("cpu")).inference.views.crop == 40
    runs = {}
    for name, checkpoints in (
        ("a", [trained.checkpoint]),
        ("b", [trained.other]),
        ("six", [six]),
        ("a+six", [trained.checkpoint, six]),
    ):
        result = predict_submission(
            checkpoints,
            test_images,
            tmp_path / name / "submission.csv",
            cache_dir=tmp_path / "cache",
            tta=False,
            device="cpu",
        )
        runs[name] = result.series.set_index(["patient_id", "series_id"]).sort_index()[COLUMNS]
    # the same weights on 6 slices of 40 x 40 predict otherwise than on 4 slices of 48 x 48
    assert not np.allclose(runs["six"].to_numpy(), runs["b"].to_numpy(), atol=1e-4)
    np.testing.assert_allclose(
        runs["a+six"].to_numpy(), (runs["a"].to_numpy() + runs["six"].to_numpy()) / 2, atol=1e-6
    )


def test_checkpoints_with_other_preprocessing_are_refused(trained, test_images, tmp_path):
    raw = torch.load(trained.other, map_location="cpu", weights_only=True)
    raw[CHECKPOINT_KEY]["preprocess"]["shape"] = [8, 32, 32]
    other = tmp_path / "other.ckpt"
    torch.save(raw, other)
    with pytest.raises(UserError, match=r"a\.ckpt and .*other\.ckpt .*differently preprocessed"):
        predict_submission([trained.checkpoint, other], test_images, tmp_path / "s.csv")


def test_tta_off_differs_from_tta_on(trained, test_images, tmp_path):
    cache = tmp_path / "cache"
    on = predict_submission(
        [trained.checkpoint], test_images, tmp_path / "on.csv", cache_dir=cache, device="cpu"
    )
    off = predict_submission(
        [trained.checkpoint],
        test_images,
        tmp_path / "off.csv",
        cache_dir=cache,
        tta=False,
        device="cpu",
    )
    assert not np.allclose(on.series[COLUMNS].to_numpy(), off.series[COLUMNS].to_numpy())


# --------------------------------------------------------------------------- failures
def test_unreadable_series_falls_back_to_the_other_series(trained, test_images, tmp_path, caplog):
    patient = _two_series_patient(test_images)
    broken, kept = _series_dirs(test_images, patient)[:2]
    _corrupt(broken)
    output = tmp_path / "submission.csv"
    with caplog.at_level(logging.WARNING, logger="ctvoco"):
        result = predict_submission(
            [trained.checkpoint], test_images, output, cache_dir=tmp_path / "cache", device="cpu"
        )
    patients = [int(p.name) for p in test_images.iterdir()]
    _check_submission(result.submission, patients)
    assert result.fallback_patients == []
    broken_key = f"{int(patient)}_{int(broken.name)}"
    assert [r["key"] for r in result.failed_series] == [broken_key]
    failed = pd.read_csv(output.with_name("failed_series.csv"))
    assert failed["key"].astype(str).tolist() == [broken_key]
    assert any(broken_key in r.getMessage() for r in caplog.records)
    # the patient is predicted from the readable series alone
    rows = result.series[result.series["patient_id"].astype(int) == int(patient)]
    assert rows["series_id"].astype(int).tolist() == [int(kept.name)]
    got = result.submission.set_index("patient_id").loc[int(patient), COLUMNS].to_numpy(float)
    np.testing.assert_allclose(got, _normalised(rows[COLUMNS].to_numpy()[0]))


def test_patient_without_readable_series_gets_the_training_prevalence(
    trained, test_images, tmp_path, caplog
):
    patient = _two_series_patient(test_images)
    for series in _series_dirs(test_images, patient):
        _corrupt(series)
    output = tmp_path / "submission.csv"
    with caplog.at_level(logging.WARNING, logger="ctvoco"):
        result = predict_submission([trained.checkpoint], test_images, output, device="cpu")
    patients = [int(p.name) for p in test_images.iterdir()]
    _check_submission(pd.read_csv(output), patients)
    assert result.fallback_patients == [patient]
    row = result.submission.set_index("patient_id").loc[int(patient), COLUMNS].to_numpy(float)
    np.testing.assert_allclose(row, trained.prevalence, atol=1e-12)
    assert any(
        "no readable series" in r.getMessage() and patient in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )
    failed = pd.read_csv(output.with_name("failed_series.csv"))
    assert len(failed) == len(_series_dirs(test_images, patient))
    # the other patients are still predicted by the model
    others = result.series["patient_id"].astype(int).unique().tolist()
    assert int(patient) not in others
    assert len(others) == len(patients) - 1


def test_a_rerun_without_failures_removes_a_stale_failed_series_csv(trained, test_images, tmp_path):
    output = tmp_path / "submission.csv"
    stale = output.with_name("failed_series.csv")
    stale.write_text("key,error\n1_2,unreadable in an earlier run\n")
    result = predict_submission([trained.checkpoint], test_images, output, device="cpu")
    assert result.failed_series == []
    assert not stale.exists()


def test_an_existing_cache_is_accepted_as_input(trained, test_images, tmp_path):
    cache = tmp_path / "cache"
    first = predict_submission(
        [trained.checkpoint], test_images, tmp_path / "a.csv", cache_dir=cache, device="cpu"
    )
    shutil.rmtree(test_images)  # the cache alone is enough
    second = predict_submission([trained.checkpoint], cache, tmp_path / "b.csv", device="cpu")
    pd.testing.assert_frame_equal(first.submission, second.submission)
    assert len(second.series) == len(first.series)


def test_missing_checkpoint_raises_user_error(test_images, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        predict_submission([tmp_path / "absent.ckpt"], test_images, tmp_path / "s.csv")
    with pytest.raises(UserError, match="checkpoint"):
        predict_submission([], test_images, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_checkpoint_without_classifier_weights_raises_data_error(trained, tmp_path):
    raw = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    raw["state_dict"] = {k: v for k, v in raw["state_dict"].items() if "heads" not in k}
    path = tmp_path / "partial.ckpt"
    torch.save(raw, path)
    with pytest.raises(DataError, match=r"partial\.ckpt"):
        load_classifier(path, torch.device("cpu"))


def test_a_plain_state_dict_is_not_a_classifier_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(DataError, match="not an InjuryClassifier checkpoint"):
        load_classifier(path, torch.device("cpu"))


def test_corrupt_checkpoint_raises_data_error(tmp_path):
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(DataError, match=r"corrupt\.ckpt"):
        load_classifier(path, torch.device("cpu"))


def test_missing_input_raises_user_error(trained, tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        predict_submission([trained.checkpoint], tmp_path / "nowhere", tmp_path / "s.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="patient_id"):
        discover_input(tmp_path / "empty")


def test_discover_input_lists_series(test_images):
    sources, patients = discover_input(test_images)
    assert patients == sorted(patients, key=int)
    assert {s.patient_id for s in sources} == set(patients)
    for source in sources:
        assert source.key == f"{source.patient_id}_{source.series_id}"
        assert Path(source.source).parent.name == source.patient_id
        assert Path(source.source).name == source.series_id


def test_discover_input_warns_about_non_integer_series_folders(test_images, caplog):
    patient = sorted(p.name for p in test_images.iterdir())[0]
    expected = {s.name for s in _series_dirs(test_images, patient)}
    (test_images / patient / "localizer").mkdir()
    (test_images / patient / ".hidden").mkdir()
    with caplog.at_level(logging.WARNING, logger="ctvoco"):
        sources, _ = discover_input(test_images)
    assert {s.series_id for s in sources if s.patient_id == patient} == expected
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("localizer" in m and "not an integer series id" in m for m in warnings)
    assert not any(".hidden" in m for m in warnings)


def test_discover_input_keeps_an_unreadable_patient_with_a_warning(
    test_images, monkeypatch, caplog
):
    patients = sorted((p.name for p in test_images.iterdir()), key=int)
    deny_listing(monkeypatch, test_images / patients[0])
    with caplog.at_level(logging.WARNING, logger="ctvoco"):
        sources, found = discover_input(test_images)
    assert found == [str(int(p)) for p in patients]
    assert {s.patient_id for s in sources} == set(patients[1:])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(test_images / patients[0]) in m and "Permission denied" in m for m in warnings)


def test_discover_input_unreadable_input_folder_is_a_user_error(test_images, monkeypatch):
    deny_listing(monkeypatch, test_images)
    with pytest.raises(UserError, match=r"cannot list the input folder \(Permission denied"):
        discover_input(test_images)


# --------------------------------------------------------------------------- CLI helper
MERGE_CASES = [
    (["checkpoint=a.ckpt", "input=x"], ["checkpoint=a.ckpt", "input=x"]),
    (["input=x"], ["input=x"]),
    ([], []),
    (
        ["checkpoint=a.ckpt", "input=x", "checkpoint=b.ckpt"],
        ["input=x", "checkpoint=[a.ckpt,b.ckpt]"],
    ),
    (
        ["checkpoint=a", "checkpoint=b", "checkpoint=c", "output=s.csv"],
        ["output=s.csv", "checkpoint=[a,b,c]"],
    ),
    # only exact key= arguments are merged
    (
        ["checkpoint=a", "checkpoint_dir=d", "checkpoint=b"],
        ["checkpoint_dir=d", "checkpoint=[a,b]"],
    ),
    # values keep their own '=' signs
    (["checkpoint=a=1", "checkpoint=b"], ["checkpoint=[a=1,b]"]),
]


@pytest.mark.parametrize(("argv", "expected"), MERGE_CASES)
def test_merge_repeated(argv, expected):
    assert merge_repeated(argv, "checkpoint") == expected


def test_merge_repeated_other_key():
    assert merge_repeated(["x=1", "y=2", "x=3"], "x") == ["y=2", "x=[1,3]"]


# --------------------------------------------------------------------------- unusable checkpoints
class _Payload:
    """An object that runs a command when unpickled unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):

        return (os.system, (f"touch {self.marker}",))


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, message
    assert len(message) < 400, message
    assert "weights_only=False" not in message and "Re-running" not in message, message
    return message


def test_a_truncated_checkpoint_is_one_line(trained, tmp_path):
    data = trained.checkpoint.read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.ckpt: truncated") as info:
        load_classifier(path, torch.device("cpu"))
    _one_line(info.value)


def test_a_pickle_payload_is_refused_without_running_it(trained, tmp_path):
    marker = tmp_path / "payload-ran"
    raw = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    raw["extra"] = _Payload(marker)
    path = tmp_path / "payload.ckpt"
    torch.save(raw, path)
    with pytest.raises(DataError, match=r"payload\.ckpt: .*Python objects") as info:
        load_classifier(path, torch.device("cpu"))
    _one_line(info.value)
    assert not marker.exists()


def test_a_pretraining_checkpoint_is_named_as_such(trained, tmp_path):
    raw = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    raw["state_dict"] = {
        "student_encoder.backbone." + k.removeprefix("net.encoder.backbone."): v
        for k, v in raw["state_dict"].items()
        if k.startswith("net.encoder.backbone.")
    }
    raw["hyper_parameters"] = {"backbone": "test_efficientnet", "grid": 2, "head_out": 16}
    path = tmp_path / "pretrain.ckpt"
    torch.save(raw, path)
    with pytest.raises(DataError, match=r"pretrain\.ckpt: a ctvoco-pretrain checkpoint") as info:
        load_classifier(path, torch.device("cpu"))
    assert "ctvoco-finetune" in _one_line(info.value)


def test_checkpoint_with_missing_weights_is_one_short_line(trained, tmp_path):
    raw = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    raw["state_dict"] = {k: v for k, v in raw["state_dict"].items() if "heads" not in k}
    path = tmp_path / "partial.ckpt"
    torch.save(raw, path)
    with pytest.raises(DataError, match=r"partial\.ckpt: .*missing") as info:
        load_classifier(path, torch.device("cpu"))
    _one_line(info.value)


# --------------------------------------------------------------------------- where it writes
def _no_inference(monkeypatch):
    import ctvoco.inference.predict as predict

    def refuse(*args, **kwargs):
        raise AssertionError("inference ran before the output was found unwritable")

    monkeypatch.setattr(predict, "_run_models", refuse)


def test_an_unwritable_output_fails_before_inference(trained, test_images, tmp_path, monkeypatch):
    _no_inference(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match=r"output=.*a-file.*not a directory") as info:
        predict_submission(
            [trained.checkpoint],
            test_images,
            blocker / "submission.csv",
            cache_dir=tmp_path / "cache",
            device="cpu",
        )
    message = _one_line(info.value)
    assert "data." not in message, message


def test_an_output_naming_a_directory_fails_before_inference(
    trained, test_images, tmp_path, monkeypatch
):
    _no_inference(monkeypatch)
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match=r"output=.*out.* is a directory"):
        predict_submission(
            [trained.checkpoint], test_images, tmp_path / "out", cache_dir=tmp_path / "c"
        )


def test_an_unwritable_cache_names_predicts_own_key(trained, test_images, tmp_path, monkeypatch):
    _no_inference(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match=r"cache_dir=") as info:
        predict_submission(
            [trained.checkpoint],
            test_images,
            tmp_path / "out" / "submission.csv",
            cache_dir=blocker / "cache",
            device="cpu",
        )
    assert "data.cache_dir" not in _one_line(info.value)


def test_a_cache_of_other_preprocessing_names_predicts_own_key(trained, test_images, tmp_path):
    from ctvoco.cache.volume_cache import VolumeCache
    from ctvoco.preprocessing.pipeline import PreprocessConfig

    cache = tmp_path / "cache"
    VolumeCache(cache).ensure_variant(PreprocessConfig(shape=(8, 32, 32)))
    with pytest.raises(UserError, match=r"cache_dir") as info:
        predict_submission(
            [trained.checkpoint], test_images, tmp_path / "s.csv", cache_dir=cache, device="cpu"
        )
    assert "data.cache_dir" not in str(info.value)


@pytest.mark.parametrize("fail_on", ["submission.csv", "series_predictions.csv"])
def test_a_failing_write_leaves_no_partial_file(
    trained, test_images, tmp_path, monkeypatch, fail_on
):
    output = tmp_path / "out" / "submission.csv"
    real_to_csv = pd.DataFrame.to_csv
    written: list[str] = []

    def failing_to_csv(frame, target=None, *args, **kwargs):
        name = getattr(target, "name", str(target))
        written.append(str(name))
        if fail_on in str(name):
            if isinstance(target, str | Path):
                Path(target).write_text("patient_id,partial\n1,")
            else:
                target.write("patient_id,partial\n1,")
            raise OSError(28, "No space left on device")
        return real_to_csv(frame, target, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", failing_to_csv)
    with pytest.raises(UserError, match=r"No space left on device.*output="):
        predict_submission(
            [trained.checkpoint], test_images, output, cache_dir=tmp_path / "cache", device="cpu"
        )
    assert any(fail_on in name for name in written), written
    assert not output.with_name(fail_on).exists()
    # only complete files: the submission when a later file failed, nothing else
    leftovers = {p.name for p in output.parent.iterdir()}
    assert leftovers <= {"submission.csv"} - {fail_on}, leftovers


# --------------------------------------------------------------------------- listed patients
def test_a_listed_patient_without_images_gets_the_training_prevalence(
    trained, test_images, tmp_path, caplog
):
    patients = sorted(int(p.name) for p in test_images.iterdir())
    absent = max(patients) + 1000
    listed = [absent, *patients]
    pd.DataFrame({"patient_id": listed, **dict.fromkeys(COLUMNS, 0.5)}).to_csv(
        test_images.parent / "sample_submission.csv", index=False
    )
    output = tmp_path / "submission.csv"
    with caplog.at_level(logging.WARNING, logger="ctvoco"):
        result = predict_submission([trained.checkpoint], test_images, output, device="cpu")
    written = pd.read_csv(output)
    assert written["patient_id"].tolist() == listed
    _check_submission(written, listed)
    row = written.set_index("patient_id").loc[absent, COLUMNS].to_numpy(float)
    np.testing.assert_allclose(row, trained.prevalence, atol=1e-12)
    assert str(absent) in result.fallback_patients
    assert any(
        str(absent) in r.getMessage() and "sample_submission.csv" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


# --------------------------------------------------------------------------- the inference spec
def _legacy(source: Path, target: Path) -> Path:
    """A copy of checkpoint ``source`` laid out as earlier versions wrote it: the spec as
    ``data_config`` and ``prevalence`` hyper-parameters."""
    raw = torch.load(source, map_location="cpu", weights_only=True)
    spec = raw.pop(CHECKPOINT_KEY)
    raw["hyper_parameters"]["data_config"] = {
        "preprocess": spec["preprocess"],
        "views": spec["views"],
    }
    raw["hyper_parameters"]["prevalence"] = spec["prevalence"]
    torch.save(raw, target)
    return target


def test_a_checkpoint_of_the_earlier_layout_predicts_the_same(trained, test_images, tmp_path):
    legacy = _legacy(trained.checkpoint, tmp_path / "legacy.ckpt")
    model = load_classifier(legacy, torch.device("cpu"))
    assert model.inference == InferenceSpec.from_checkpoint(
        torch.load(trained.checkpoint, map_location="cpu", weights_only=True), "a.ckpt"
    )
    cache = tmp_path / "cache"
    runs = [
        predict_submission([path], test_images, tmp_path / name / "s.csv", cache_dir=cache)
        for name, path in (("new", trained.checkpoint), ("old", legacy))
    ]
    pd.testing.assert_frame_equal(runs[0].submission, runs[1].submission)


def test_a_checkpoint_without_an_inference_spec_is_named(trained, tmp_path):
    raw = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    del raw[CHECKPOINT_KEY]
    path = tmp_path / "bare.ckpt"
    torch.save(raw, path)
    with pytest.raises(DataError, match=r"bare\.ckpt: the checkpoint does not record") as info:
        load_classifier(path, torch.device("cpu"))
    _one_line(info.value)


def test_every_batch_goes_through_predict_step(trained, test_images, tmp_path, monkeypatch):
    calls: list[int] = []
    real = InjuryClassifier.predict_step

    def counted(self, batch, *args, **kwargs):
        calls.append(len(batch["key"]))
        return real(self, batch, *args, **kwargs)

    monkeypatch.setattr(InjuryClassifier, "predict_step", counted)
    result = predict_submission(
        [trained.checkpoint, trained.other], test_images, tmp_path / "s.csv", batch_size=2
    )
    assert sum(calls) == 2 * len(result.series)
