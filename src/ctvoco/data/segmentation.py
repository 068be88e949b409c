"""Organ segmentation data: 2.5D slices of cached series with their masks, split by patient.

A sample is slice ``k`` of a cached series with ``context`` neighbours on each side as
channels (an edge slice repeats itself where the series ends), and the organ labels of
slice ``k`` (:class:`MaskedSlices`). Series are split into training and validation by
patient (:func:`split_by_patient`), so no patient's series is on both sides.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.data.datamodules import RSNADataModule
from ctvoco.errors import ArgumentError, DataError, UserError
from ctvoco.preprocessing.stacks import slice_stack

log = logging.getLogger(__name__)


class MaskedSlices(Dataset[dict[str, Any]]):
    """Every slice of the cached series that have an organ mask.

    Args:
        cache_dir: The volume cache (:class:`~ctvoco.cache.volume_cache.VolumeCache`).
        keys: The series (cached with their masks).
        context: Neighbour slices on each side of the centre slice.

    Items: ``image`` ``(C * (2 context + 1), H, W)`` float32, ``mask`` ``(H, W)`` int64,
    ``key`` and ``slice``.

    Raises:
        DataError: A series has no cached mask, or a mask not the shape of its image.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        keys: Sequence[str],
        *,
        context: int = 1,
    ) -> None:
        if context < 0:
            raise ArgumentError("context", f" must be 0 or more slices; got {context}")
        self.cache = VolumeCache(cache_dir)
        self.keys = list(keys)
        self.context = int(context)
        self.index: list[tuple[int, int]] = []
        for k, key in enumerate(self.keys):
            if not self.cache.has_mask(key):
                raise DataError(f"{self.cache.mask_path(key)}: no organ mask cached for {key}")
            mask = self.cache.load_mask(key)
            image_shape = self.cache.load(key).shape[-3:]
            if mask.shape != image_shape:
                raise DataError(
                    f"{self.cache.mask_path(key)}: mask {mask.shape} does not match its image "
                    f"{image_shape}; rebuild the cache"
                )
            self.index.extend((k, d) for d in range(mask.shape[0]))
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _arrays(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._open:  # memory maps, opened once per worker
            key = self.keys[k]
            self._open[k] = (self.cache.load(key), self.cache.load_mask(key))
        return self._open[k]

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, d = self.index[i]
        volume, mask = self._arrays(k)
        image = slice_stack(volume, d, self.context)
        labels = np.asarray(mask[d], dtype=np.int64)
        return {
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy(labels),
            "key": self.keys[k],
            "slice": d,
        }


def split_by_patient(
    cache_dir: str | os.PathLike[str], keys: Sequence[str], val_share: float, seed: int
) -> tuple[list[str], list[str]]:
    """Training and validation series, no patient on both sides.

    Args:
        cache_dir: The cache whose records name each series' patient.
        keys: The series to split.
        val_share: Share of the patients that validate (at least one when ``keys`` holds
            two patients or more).
        seed: The draw of the validation patients.

    Returns:
        ``(train keys, validation keys)``, each sorted.
    """
    if not 0 <= val_share < 1:
        raise ArgumentError("val_share", f" must be in [0, 1); got {val_share}")
    cache = VolumeCache(Path(cache_dir))
    patients: dict[str, list[str]] = {}
    for key in keys:
        record = cache.record(key) or {}
        patients.setdefault(str(record.get("patient_id") or key), []).append(key)
    names = sorted(patients)
    n_val = 0 if val_share == 0 or len(names) < 2 else max(1, round(val_share * len(names)))
    chosen = set(np.random.default_rng(seed).permutation(names)[:n_val].tolist())
    val = sorted(k for p in chosen for k in patients[p])
    train = sorted(k for p in names if p not in chosen for k in patients[p])
    return train, val


class OrganSegmentationDataModule(pl.LightningDataModule):
    """The RSNA series that have organ masks, as 2.5D slices for segmentation.

    The cache is built from ``root`` like the classifier's (the masks of
    ``<root>/segmentations`` are cached with their series); training and validation are
    the masked training series, split by patient.

    Args:
        root: The RSNA tree.
        cache_dir: Its volume cache.
        preprocess: :class:`~ctvoco.preprocessing.PreprocessConfig` fields.
        auto_preprocess: Build what the cache lacks (else fail with the command to run).
        preprocess_workers: Processes that build the cache.
        context: Neighbour slices on each side of a sample's centre slice.
        val_share: Share of the masked patients that validate.
        seed: The validation patients' draw and the shuffling.
        batch_size: Slices per training step.
        val_batch_size: Slices per validation step (default ``batch_size``).
        num_workers: DataLoader workers.
        pin_memory: Pin host memory (GPU training).
    """

    def __init__(
        self,
        *,
        root: str,
        cache_dir: str,
        preprocess: Mapping[str, Any] | None = None,
        auto_preprocess: bool = True,
        preprocess_workers: int = 2,
        context: int = 1,
        val_share: float = 0.2,
        seed: int = 42,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ArgumentError("batch_size", f" must be at least 1; got {batch_size}")
        if not 0 <= val_share < 1:
            raise ArgumentError("val_share", f" must be in [0, 1); got {val_share}")
        self.series = RSNADataModule(
            root=root,
            cache_dir=cache_dir,
            preprocess=preprocess,
            auto_preprocess=auto_preprocess,
            preprocess_workers=preprocess_workers,
            purpose="pretrain",
            fold=None,
        )
        self.context = int(context)
        self.val_share = float(val_share)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.train_keys: list[str] = []
        self.val_keys: list[str] = []

    @property
    def cache(self) -> VolumeCache:
        """The volume cache the samples come from."""
        return self.series.cache

    @property
    def windows(self) -> int:
        """Channels of the cache arrays (its windows)."""
        return self.series.preprocess.channels

    def check_inputs(self) -> None:
        """Fail early when the data or the cache cannot serve (see :class:`RSNADataModule`)."""
        self.series.check_inputs()

    def prepare_data(self) -> None:
        self.series.build_cache(retry_failed=False)

    def masked_keys(self) -> list[str]:
        """The training series cached with their masks.

        Raises:
            UserError: None has a mask (naming the folder where RSNA's masks belong).
        """
        keys = set(self.cache.mask_keys())
        ready = set(self.series.ready_items()["key"].astype(str))
        found = sorted(keys & ready)
        if not found:
            raise UserError(
                f"no series of {self.series.root} is cached with an organ mask: RSNA's masks "
                f"belong in {self.series.root / 'segmentations'}/<series_id>.nii (see the "
                "cache's manifest.csv, column mask, for masks that could not be used)"
            )
        return found

    def setup(self, stage: str | None = None) -> None:
        self.train_keys, self.val_keys = split_by_patient(
            self.cache.root, self.masked_keys(), self.val_share, self.seed
        )
        log.info(
            "organ segmentation: %d training and %d validation series with masks",
            len(self.train_keys),
            len(self.val_keys),
        )

    def _loader(self, keys: list[str], batch_size: int, shuffle: bool) -> DataLoader[Any]:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            MaskedSlices(self.cache.root, keys, context=self.context),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator if shuffle else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(keys) > 0,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.train_keys, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any] | list[Any]:
        if not self.val_keys:
            return []
        return self._loader(self.val_keys, self.val_batch_size, shuffle=False)
