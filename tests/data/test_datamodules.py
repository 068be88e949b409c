"""The data modules on a real (synthetic) RSNA DICOM tree and FLARE NIfTI tree."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ctvoco.cache import VolumeCache
from ctvoco.data import ConcatDataModule, RSNADataModule
from ctvoco.data.folds import folds_path
from ctvoco.data.rsna import read_rsna_labels
from ctvoco.errors import UserError
from ctvoco.labels import TARGET_CLASSES, TARGETS
from ctvoco.preprocessing import PreprocessConfig
from tests.conftest import TINY_SHAPE
from tests.data.conftest import (
    copy_cache,
    copy_rsna_tree,
    expected_classes,
    flare_module,
    label_row,
    rsna_module,
    write_csv,
)


def patients(dataset) -> set[str]:
    return set(dataset.items["patient_id"])


def train_keys(tiny_cohort) -> set[str]:
    meta = pd.read_csv(tiny_cohort.rsna_root / "train_series_meta.csv")
    return {f"{p}_{s}" for p, s in meta[["patient_id", "series_id"]].to_numpy()}


def all_patients(tiny_cohort) -> set[str]:
    return {str(p) for p in tiny_cohort.labels["patient_id"]}


def fold_patients(cache_dir: Path, fold: int) -> set[str]:
    folds = pd.read_csv(folds_path(cache_dir, 5, 42))
    return {str(p) for p in folds.loc[folds["fold"] == fold, "patient_id"]}


@pytest.fixture(scope="module")
def classify_fold0(tiny_cohort, rsna_cache) -> RSNADataModule:
    dm = rsna_module(tiny_cohort.rsna_root, rsna_cache, fold=0)
    dm.setup("fit")
    return dm


# -- construction ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"purpose": "finetune"},
            r"^purpose must be one of classify, pretrain; got 'finetune'",
        ),
        ({"fold": 5}, r"^fold must be in 0..4 \(or null\); got 5"),
        ({"fold": -1}, r"^fold must be in 0..4"),
        ({"fold": 2, "n_folds": 2}, r"^fold must be in 0..1"),
        ({"exclude_folds": [0, 7]}, r"^exclude_folds must be in 0..4; got \[7\]"),
        ({"train_fraction": 0.0}, r"^train_fraction must be in \(0, 1\]; got 0.0"),
        ({"train_fraction": 1.5}, r"^train_fraction must be in \(0, 1\]"),
        ({"val_fraction": 1.0}, r"^val_fraction must be in \[0, 1\); got 1.0"),
        ({"batch_size": 0}, r"^batch_size must be at least 1; got 0"),
        ({"preprocess": {"shape": [16, 64]}}, r"preprocess.shape must be three positive sizes"),
        ({"preprocess": {"size": 3}}, r"unknown preprocess option\(s\) size"),
    ],
)
def test_bad_options_are_user_errors(tmp_path: Path, kwargs, message: str) -> None:
    with pytest.raises(UserError, match=message):
        rsna_module(tmp_path / "rsna", tmp_path / "cache", **kwargs)


def test_flare_cannot_classify(tiny_cohort, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="FLARE23 has no injury labels: use it for pretraining"):
        flare_module(tiny_cohort.flare_root, tmp_path / "cache", purpose="classify")


def test_concat_needs_members() -> None:
    with pytest.raises(UserError, match=r"^members is empty"):
        ConcatDataModule(members={})


# -- missing data ------------------------------------------------------------------------
def test_rsna_check_inputs_without_data(tmp_path: Path) -> None:
    dm = rsna_module(tmp_path / "missing", tmp_path / "cache")
    for step in (dm.check_inputs, dm.prepare_data):
        with pytest.raises(UserError, match="RSNA 2023 data not found") as info:
            step()
        assert "kaggle" in str(info.value)
        assert "data.root" in str(info.value)


def test_flare_check_inputs_without_data(tmp_path: Path) -> None:
    dm = flare_module(tmp_path / "missing", tmp_path / "cache")
    with pytest.raises(UserError, match=r"FLARE23 data not found.*data\.root"):
        dm.check_inputs()


@pytest.mark.parametrize(
    ("kwargs", "needs_labels"),
    [
        ({"purpose": "classify"}, True),
        ({"purpose": "pretrain", "exclude_folds": [1]}, True),
        ({"purpose": "pretrain"}, False),
    ],
)
def test_labels_are_needed_only_for_classification_and_excluded_folds(
    tiny_cohort, rsna_cache, tmp_path: Path, kwargs, needs_labels: bool
) -> None:
    root = copy_rsna_tree(tiny_cohort.rsna_root, tmp_path / "rsna", with_labels=False)
    dm = rsna_module(root, copy_cache(rsna_cache, tmp_path / "cache"), **kwargs)
    if needs_labels:
        for step in (dm.check_inputs, dm.setup):
            with pytest.raises(
                UserError, match=r"labels not found: .*train\.csv.*data\.labels_csv"
            ):
                step()
        return
    dm.check_inputs()
    dm.prepare_data()
    dm.setup("fit")
    assert patients(dm.train_set) | patients(dm.val_set) == all_patients(tiny_cohort)
    assert not dm.train_set.has_labels


# -- the cache ---------------------------------------------------------------------------
def test_prepare_data_builds_the_cache(tiny_cohort, rsna_cache) -> None:
    cache = VolumeCache(rsna_cache)
    assert cache.manifest_path.exists()
    assert cache.variant() == PreprocessConfig(shape=TINY_SHAPE).fingerprint()
    manifest = cache.manifest()
    assert set(manifest["key"]) == train_keys(tiny_cohort)
    assert (manifest["status"] == "ok").all()
    for key in manifest["key"]:
        array = cache.load(key)
        assert array.shape == TINY_SHAPE
        assert array.dtype == np.uint8
    # A second run has nothing to do.
    assert rsna_module(tiny_cohort.rsna_root, rsna_cache).build_cache() is None


def test_prepare_data_enforces_the_variant(tiny_cohort, rsna_cache) -> None:
    other = rsna_module(tiny_cohort.rsna_root, rsna_cache, preprocess={"shape": [8, 32, 32]})
    for step in (other.prepare_data, other.check_inputs):
        with pytest.raises(UserError, match=r"built with other preprocessing \(shape: "):
            step()


def test_prepare_data_does_not_retry_failed_series_but_preprocess_does(
    tmp_path: Path, monkeypatch
) -> None:
    from ctvoco.cache import builder
    from ctvoco.io import write_nifti
    from tests.conftest import body_phantom

    root = tmp_path / "flare"
    for i in range(2):
        write_nifti(body_phantom(seed=i), root / f"CASE_{i:04d}_0000.nii.gz", (5.0, 4.0, 4.0))
    (root / "BROKEN_0000.nii.gz").write_bytes(b"not a nifti file")
    processed: list[str] = []
    real = builder.process_series

    def counting(source, config, cache_root):
        processed.append(source.key)
        return real(source, config, cache_root)

    monkeypatch.setattr(builder, "process_series", counting)
    dm = flare_module(root, tmp_path / "cache")
    dm.prepare_data()
    assert sorted(processed) == ["BROKEN", "CASE_0000", "CASE_0001"]
    assert dm.cache.record("BROKEN")["status"] == "failed"

    processed.clear()
    dm.cache.volume_path("CASE_0001").unlink()
    dm.prepare_data()  # rebuilds the missing series only: the failed one would fail again
    assert processed == ["CASE_0001"]
    processed.clear()
    assert dm.build_cache() is None, "prepare_data leaves failed series alone"

    summary = dm.build_cache(retry_failed=True)  # what ctvoco-preprocess does by default
    assert processed == ["BROKEN"]
    assert summary is not None and [r["key"] for r in summary.failed] == ["BROKEN"]


def test_without_auto_preprocess_an_empty_cache_names_the_command(
    tiny_cohort, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    dm = rsna_module(tiny_cohort.rsna_root, cache_dir, auto_preprocess=False)
    n = len(train_keys(tiny_cohort))
    with pytest.raises(UserError, match=rf"lacks {n} of {n} series; run ctvoco-preprocess") as info:
        dm.prepare_data()
    message = str(info.value)
    assert f"data=rsna data.root={tiny_cohort.rsna_root} data.cache_dir={cache_dir}" in message
    assert "data.auto_preprocess=true" in message
    assert not VolumeCache(cache_dir).ready_keys()


# -- classification splits ---------------------------------------------------------------
@pytest.mark.parametrize("fold", [0, 3])
def test_classify_splits_by_patient_along_the_saved_folds(tiny_cohort, rsna_cache, fold) -> None:
    dm = rsna_module(tiny_cohort.rsna_root, rsna_cache, fold=fold)
    dm.setup("fit")
    train, val = patients(dm.train_set), patients(dm.val_set)
    assert not train & val
    assert val == fold_patients(rsna_cache, fold)
    assert val
    assert train | val == all_patients(tiny_cohort)
    keys = set(dm.train_set.items["key"]) | set(dm.val_set.items["key"])
    assert keys == train_keys(tiny_cohort)  # every series of every patient
    assert len(dm.train_set) + len(dm.val_set) == len(keys)


def test_classify_labels_match_train_csv(tiny_cohort, classify_fold0) -> None:
    expected = expected_classes(read_rsna_labels(tiny_cohort.rsna_root / "train.csv"))
    for dataset in (classify_fold0.train_set, classify_fold0.val_set):
        assert dataset.has_labels
        for i in range(len(dataset)):
            row = dataset.items.iloc[i]
            assert row[list(TARGETS)].tolist() == expected[int(row["patient_id"])]
    sample = classify_fold0.val_set[0]
    assert sample["labels"].tolist() == expected[int(sample["patient_id"])]


def test_train_batch_with_the_whole_volume_view(classify_fold0) -> None:
    batch = next(iter(classify_fold0.train_dataloader()))
    # the synthetic cohort ships image_level_labels.csv: per-slice targets come along
    assert set(batch) == {
        "volume",
        "key",
        "index",
        "patient_id",
        "series_id",
        "labels",
        "slice_targets",
        "slice_mask",
    }
    assert batch["slice_targets"].shape == (2, TINY_SHAPE[0], 2)
    assert batch["volume"].shape == (2, *TINY_SHAPE)
    assert batch["volume"].dtype == torch.uint8
    assert batch["labels"].shape == (2, 5)
    assert batch["labels"].dtype == torch.int64
    assert all(isinstance(k, str) for k in batch["key"])
    for key, patient, series in zip(
        batch["key"], batch["patient_id"], batch["series_id"], strict=True
    ):
        assert key == f"{patient}_{series}"
        assert re.fullmatch(r"\d+", patient)
        assert re.fullmatch(r"\d+", series)


def test_loaders_are_seeded(tiny_cohort, rsna_cache, classify_fold0) -> None:
    again = rsna_module(tiny_cohort.rsna_root, rsna_cache, fold=0)
    again.setup("fit")
    keys = [k for b in classify_fold0.train_dataloader() for k in b["key"]]
    assert keys == [k for b in again.train_dataloader() for k in b["key"]]
    assert sorted(keys) == sorted(classify_fold0.train_set.items["key"])
    val_keys = [k for b in classify_fold0.val_dataloader() for k in b["key"]]
    assert val_keys == classify_fold0.val_set.items["key"].tolist()  # no shuffling


def test_loader_shards_across_ranks(classify_fold0) -> None:
    dm = classify_fold0
    connector = SimpleNamespace(use_distributed_sampler=False)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1, _accelerator_connector=connector)
    try:
        sampler = dm.train_dataloader().sampler
        assert (sampler.num_replicas, sampler.rank, sampler.shuffle) == (2, 1, True)
        connector.use_distributed_sampler = True
        with pytest.raises(UserError, match=r"trainer\.use_distributed_sampler=false"):
            dm.val_dataloader()
    finally:
        dm.trainer = None


def test_fold_none_trains_on_everyone(tiny_cohort, rsna_cache) -> None:
    dm = rsna_module(tiny_cohort.rsna_root, rsna_cache, fold=None)
    dm.setup("fit")
    assert len(dm.val_set) == 0
    assert set(dm.train_set.items["key"]) == train_keys(tiny_cohort)


def test_train_fraction_keeps_half_of_the_training_patients(
    tiny_cohort, rsna_cache, classify_fold0
) -> None:
    full = patients(classify_fold0.train_set)
    halves = []
    for _ in range(2):
        dm = rsna_module(tiny_cohort.rsna_root, rsna_cache, fold=0, train_fraction=0.5)
        dm.setup("fit")
        halves.append(patients(dm.train_set))
        assert patients(dm.val_set) == patients(classify_fold0.val_set)
        # Whole patients: every series of a kept patient stays.
        kept = classify_fold0.train_set.items["patient_id"].isin(halves[-1])
        assert set(dm.train_set.items["key"]) == set(classify_fold0.train_set.items["key"][kept])
    assert halves[0] == halves[1]
    assert halves[0] < full
    assert len(halves[0]) == round(0.5 * len(full))


def test_class_prevalence(classify_fold0, tiny_cohort) -> None:
    prevalence = classify_fold0.class_prevalence()
    assert len(prevalence) == 13
    start = 0
    train = set(classify_fold0.train_set.items["patient_id"].astype(int))
    expected = expected_classes(read_rsna_labels(tiny_cohort.rsna_root / "train.csv"))
    for t, (target, classes) in enumerate(TARGET_CLASSES.items()):
        part = prevalence[start : start + len(classes)]
        start += len(classes)
        assert sum(part) == pytest.approx(1.0), target
        counts = np.bincount([expected[p][t] for p in train], minlength=len(classes))
        assert part == pytest.approx((counts / counts.sum()).tolist()), target


# -- mismatched labels and images --------------------------------------------------------
def test_labels_and_images_that_do_not_match_are_reported(
    tiny_cohort, rsna_cache, tmp_path: Path, caplog
) -> None:
    root = copy_rsna_tree(tiny_cohort.rsna_root, tmp_path / "rsna")
    labels = pd.read_csv(root / "train.csv")
    dropped = int(labels["patient_id"].iloc[0])
    rows = [*labels.iloc[1:].to_dict("records"), label_row(99999, liver=2)]
    write_csv(root / "train.csv", rows)
    cache_dir = copy_cache(rsna_cache, tmp_path / "cache")
    dm = rsna_module(root, cache_dir, fold=0)
    with caplog.at_level(logging.WARNING, logger="ctvoco.data"):
        dm.prepare_data()
        dm.setup("fit")
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    no_labels = [m for m in messages if "have images but no labels" in m]
    no_images = [m for m in messages if "have no cached series" in m]
    assert len(no_labels) == 1
    assert str(dropped) in no_labels[0]
    assert str(root / "train.csv") in no_labels[0]
    assert len(no_images) == 1
    assert "99999" in no_images[0]
    used = patients(dm.train_set) | patients(dm.val_set)
    assert used == all_patients(tiny_cohort) - {str(dropped)}
    folds = pd.read_csv(folds_path(cache_dir, 5, 42))
    assert 99999 in set(folds["patient_id"])
    assert dropped not in set(folds["patient_id"])


# -- pretraining -------------------------------------------------------------------------
def test_pretrain_excludes_the_held_out_folds(tiny_cohort, rsna_cache, classify_fold0) -> None:
    dm = rsna_module(tiny_cohort.rsna_root, rsna_cache, purpose="pretrain", exclude_folds=[0])
    dm.check_inputs()
    dm.setup("fit")
    held_out = fold_patients(rsna_cache, 0)
    assert held_out == patients(classify_fold0.val_set)
    seen = patients(dm.train_set) | patients(dm.val_set)
    assert not seen & held_out
    assert seen == all_patients(tiny_cohort) - held_out
    assert not patients(dm.train_set) & patients(dm.val_set)
    assert not dm.train_set.has_labels
    assert "labels" not in dm.train_set[0]


def test_pretrain_without_exclusions_uses_every_patient(tiny_cohort, rsna_cache) -> None:
    dm = rsna_module(tiny_cohort.rsna_root, rsna_cache, purpose="pretrain", val_fraction=0.2)
    dm.setup("fit")
    train, val = patients(dm.train_set), patients(dm.val_set)
    assert not train & val
    assert len(val) == 2
    assert train | val == all_patients(tiny_cohort)


# -- cache-only mode ---------------------------------------------------------------------
def test_cache_only_mode(tiny_cohort, rsna_cache, classify_fold0, tmp_path: Path) -> None:
    cache_dir = copy_cache(rsna_cache, tmp_path / "copied")
    dm = rsna_module(
        tmp_path / "raw-data-elsewhere",
        cache_dir,
        fold=0,
        labels_csv=str(tiny_cohort.rsna_root / "train.csv"),
        series_meta_csv=str(tiny_cohort.rsna_root / "train_series_meta.csv"),
    )
    assert dm.cache_only()
    dm.check_inputs()
    dm.prepare_data()
    dm.setup("fit")
    assert patients(dm.val_set) == patients(classify_fold0.val_set)
    assert set(dm.train_set.items["key"]) == set(classify_fold0.train_set.items["key"])
    assert set(dm.train_set.items["cache"]) == {str(cache_dir)}
    assert next(iter(dm.train_dataloader()))["volume"].shape == (2, *TINY_SHAPE)


def test_cache_only_mode_still_enforces_the_variant(rsna_cache, tmp_path: Path) -> None:
    cache_dir = copy_cache(rsna_cache, tmp_path / "copied")
    dm = rsna_module(
        tmp_path / "missing", cache_dir, purpose="pretrain", preprocess={"shape": [8, 32, 32]}
    )
    with pytest.raises(UserError, match="built with other preprocessing"):
        dm.check_inputs()


def test_split_selects_its_own_series_in_a_shared_cache(
    tiny_cohort, rsna_cache, tmp_path: Path
) -> None:
    cache_dir = copy_cache(rsna_cache, tmp_path / "cache")
    dm = rsna_module(tiny_cohort.rsna_root, cache_dir, split="test", purpose="pretrain")
    dm.prepare_data()
    dm.setup("fit")
    test_patients = {str(p) for p in tiny_cohort.test_labels["patient_id"]}
    assert patients(dm.train_set) | patients(dm.val_set) == test_patients


# -- FLARE and the concatenation ---------------------------------------------------------
def test_flare_cache_and_holdout_by_case(tiny_cohort, flare_cache) -> None:
    assert sorted(VolumeCache(flare_cache).ready_keys()) == tiny_cohort.flare_cases
    dm = flare_module(tiny_cohort.flare_root, flare_cache, val_fraction=0.34)
    dm.check_inputs()
    dm.prepare_data()
    dm.setup("fit")
    train, val = patients(dm.train_set), patients(dm.val_set)
    assert len(val) == 1
    assert not train & val
    assert train | val == set(tiny_cohort.flare_cases)
    for dataset in (dm.train_set, dm.val_set):
        assert (dataset.items["key"] == dataset.items["patient_id"]).all()
        assert (dataset.items["series_id"] == "").all()
    again = flare_module(tiny_cohort.flare_root, flare_cache, val_fraction=0.34)
    again.setup("fit")
    assert patients(again.val_set) == val


def test_flare_without_validation(tiny_cohort, flare_cache) -> None:
    dm = flare_module(tiny_cohort.flare_root, flare_cache, val_fraction=0.0)
    dm.setup("fit")
    assert len(dm.val_set) == 0
    assert patients(dm.train_set) == set(tiny_cohort.flare_cases)
    sample = dm.train_set[0]
    assert set(sample) == {"volume", "key", "index", "patient_id", "series_id"}
    assert sample["series_id"] == ""


def test_concat_of_flare_and_rsna(tiny_cohort, rsna_cache, flare_cache) -> None:
    members = {
        "flare": flare_module(tiny_cohort.flare_root, flare_cache),
        "rsna": rsna_module(
            tiny_cohort.rsna_root, rsna_cache, purpose="pretrain", exclude_folds=[0]
        ),
    }
    dm = ConcatDataModule(members=members, batch_size=4, num_workers=0)
    dm.check_inputs()
    dm.prepare_data()
    dm.setup("fit")
    items = dm.train_set.items
    assert set(items["cache"]) == {str(rsna_cache), str(flare_cache)}
    for name, member in members.items():
        member_train, member_val = member.split_items()
        assert set(member_train["key"]) <= set(items["key"]), name
        assert set(member_val["key"]) <= set(dm.val_set.items["key"]), name
    assert len(items) == sum(len(m.split_items()[0]) for m in members.values())
    assert not patients(dm.train_set) & fold_patients(rsna_cache, 0)
    keys = []
    for batch in dm.train_dataloader():
        assert batch["volume"].shape[1:] == TINY_SHAPE
        assert "labels" not in batch
        keys += batch["key"]
    assert sorted(keys) == sorted(items["key"])
    assert keys != items["key"].tolist()  # shuffled together, not one data set after the other
    assert {k.startswith("FLARE23_") for k in keys} == {True, False}


def test_classification_never_sees_excluded_folds(tiny_cohort, rsna_cache, classify_fold0) -> None:
    """A held-out test fold stays out of training and validation (a study's evaluated patients)."""
    folds = classify_fold0.folds().set_index("patient_id")["fold"]
    dm = rsna_module(tiny_cohort.rsna_root, rsna_cache, fold=0, exclude_folds=[1])
    dm.setup("fit")
    held_out = {str(p) for p, f in folds.items() if f == 1}
    assert held_out, "the tiny cohort has patients in fold 1"
    assert not (patients(dm.train_set) | patients(dm.val_set)) & held_out
    assert patients(dm.val_set) == patients(classify_fold0.val_set)
    assert patients(dm.train_set) == patients(classify_fold0.train_set) - held_out


def test_validation_fold_cannot_be_excluded(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"fold 1 is both the validation fold and excluded"):
        rsna_module(tmp_path / "rsna", tmp_path / "cache", fold=1, exclude_folds=[1])
