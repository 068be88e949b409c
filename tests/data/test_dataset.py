"""CachedVolumeDataset: memory-mapped reads, labels, ids, several caches, seeded views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from ctvoco.cache import VolumeCache
from ctvoco.data import CachedVolumeDataset, SeededSampler, WholeVolume, sample_seed
from ctvoco.labels import TARGETS

SHAPE = (4, 8, 8)


def volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)


@pytest.fixture
def two_caches(tmp_path: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Items of two caches (RSNA-like and FLARE-like keys) and the arrays written."""
    arrays = {}
    rows = []
    for name, keys in (("rsna", ["10_100", "10_101", "20_200"]), ("flare", ["FLARE23_0001"])):
        cache = VolumeCache(tmp_path / name)
        for i, key in enumerate(keys):
            arrays[key] = volume(len(arrays) + i)
            cache.write(key, arrays[key])
            patient, _, series = key.rpartition("_") if name == "rsna" else (key, "", "")
            rows.append(
                {"key": key, "cache": str(cache.root), "patient_id": patient, "series_id": series}
            )
    return pd.DataFrame(rows), arrays


class SpyView:
    """Records what the dataset passes in; returns the volume's sum."""

    def __init__(self) -> None:
        self.volumes: list[np.ndarray] = []

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        self.volumes.append(volume)
        return {"sum": int(volume.sum())}


class RandomCrop:
    """A random view: a 2x4x4 crop plus a random number, all from ``rng``."""

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        z, y, x = (
            int(rng.integers(0, s - c + 1)) for s, c in zip(volume.shape, (2, 4, 4), strict=True)
        )
        crop = np.array(volume[z : z + 2, y : y + 4, x : x + 4])
        return {"crop": torch.from_numpy(crop), "noise": float(rng.random())}


def same_sample(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_volumes_are_read_memory_mapped(two_caches) -> None:
    items, arrays = two_caches
    spy = SpyView()
    dataset = CachedVolumeDataset(items, spy)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample["sum"] == int(arrays[sample["key"]].sum())
    assert len(spy.volumes) == len(items)
    for seen in spy.volumes:
        assert isinstance(seen, np.memmap)
        assert not seen.flags.writeable
        assert seen.dtype == np.uint8
        assert seen.shape == SHAPE


def test_default_view_is_the_whole_volume(two_caches) -> None:
    items, arrays = two_caches
    dataset = CachedVolumeDataset(items)
    assert isinstance(dataset.view, WholeVolume)
    sample = dataset[3]
    assert sample["volume"].dtype == torch.uint8
    assert torch.equal(sample["volume"], torch.from_numpy(arrays["FLARE23_0001"]))


def test_rows_from_two_caches_in_one_dataset(two_caches) -> None:
    items, arrays = two_caches
    dataset = CachedVolumeDataset(items)
    assert len(dataset) == 4
    assert items["cache"].nunique() == 2
    for i, key in enumerate(items["key"]):
        sample = dataset[i]
        assert sample["key"] == key
        assert np.array_equal(sample["volume"].numpy(), arrays[key])


def test_ids_are_strings_and_no_labels_without_target_columns(two_caches) -> None:
    items, _ = two_caches
    items = items.assign(patient_id=[10, 10, 20, 7], series_id=[100, 101, 200, 0])
    dataset = CachedVolumeDataset(items)
    assert not dataset.has_labels
    sample = dataset[0]
    assert (sample["key"], sample["patient_id"], sample["series_id"]) == ("10_100", "10", "100")
    assert "labels" not in sample
    assert dataset[3]["patient_id"] == "7"


def test_labels_are_five_int64_classes_in_target_order(two_caches) -> None:
    items, _ = two_caches
    classes = [[0, 1, 2, 0, 1], [1, 0, 0, 2, 0], [0, 0, 1, 1, 2], [1, 1, 0, 0, 0]]
    labelled = items.join(pd.DataFrame(classes, columns=list(TARGETS)))
    dataset = CachedVolumeDataset(labelled)
    assert dataset.has_labels
    for i in range(len(dataset)):
        labels = dataset[i]["labels"]
        assert labels.shape == (5,)
        assert labels.dtype == torch.int64
        assert labels.tolist() == labelled.loc[i, list(TARGETS)].tolist()


def test_labels_from_columns_stored_in_another_order(two_caches) -> None:
    items, _ = two_caches
    classes = [[0, 1, 2, 0, 1], [1, 0, 0, 2, 0], [0, 0, 1, 1, 2], [1, 1, 0, 0, 0]]
    reordered = pd.DataFrame(classes, columns=list(TARGETS)[::-1])[list(TARGETS)]
    labelled = items.join(reordered)
    dataset = CachedVolumeDataset(labelled)
    assert dataset[0]["labels"].tolist() == reordered.iloc[0].tolist()


def test_some_target_columns_are_not_labels(two_caches) -> None:
    items, _ = two_caches
    partial = items.assign(bowel=0, liver=1)
    assert "labels" not in CachedVolumeDataset(partial)[0]


@pytest.mark.parametrize("column", ["key", "cache", "patient_id", "series_id"])
def test_missing_item_columns(two_caches, column: str) -> None:
    items, _ = two_caches
    with pytest.raises(ValueError, match=rf"items lack column\(s\) {column}"):
        CachedVolumeDataset(items.drop(columns=column))


def test_missing_item_columns_all_named(two_caches) -> None:
    items, _ = two_caches
    with pytest.raises(ValueError, match=r"items lack column\(s\) cache, series_id"):
        CachedVolumeDataset(items.drop(columns=["cache", "series_id"]))


def test_same_index_and_seed_give_the_same_sample(two_caches) -> None:
    items, _ = two_caches
    dataset = CachedVolumeDataset(items, RandomCrop(), seed=4)
    other = CachedVolumeDataset(items, RandomCrop(), seed=4)
    for index in range(len(dataset)):
        for seed in (0, 1, 2**62):
            assert same_sample(dataset[(index, seed)], other[(index, seed)])
            assert same_sample(dataset[(index, seed)], dataset[(index, seed)])
    draws = [dataset[(0, seed)]["noise"] for seed in range(5)]
    assert len(set(draws)) == 5  # the seed drives the view


def test_plain_index_uses_the_dataset_seed(two_caches) -> None:
    items, _ = two_caches
    dataset = CachedVolumeDataset(items, RandomCrop(), seed=4)
    for index in range(len(dataset)):
        assert same_sample(dataset[index], dataset[(index, sample_seed(4, 0, index))])
    reseeded = CachedVolumeDataset(items, RandomCrop(), seed=5)
    assert dataset[0]["noise"] != reseeded[0]["noise"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_samples_do_not_depend_on_workers(two_caches, num_workers: int) -> None:
    items, _ = two_caches
    dataset = CachedVolumeDataset(items, RandomCrop(), seed=4)
    sampler = SeededSampler(len(dataset), shuffle=True, seed=4)
    sampler.set_epoch(1)
    expected = [dataset[item] for item in sampler]
    loader = DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers)
    got = list(loader)
    assert len(got) == len(expected)
    assert all(same_sample(a, b) for a, b in zip(got, expected, strict=True))
