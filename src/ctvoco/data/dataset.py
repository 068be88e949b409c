"""A dataset over cached volumes: memory-mapped reads, a view transform, labels when known."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.data.sampling import sample_seed
from ctvoco.errors import DataError
from ctvoco.labels import TARGETS


class VolumeView(Protocol):
    """Turns one cached volume into the tensors a model consumes.

    ``volume`` is the read-only memory-mapped cache array (``(D, H, W)`` or ``(C, D, H, W)``
    uint8); all randomness must come from ``rng``.
    """

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, Any]: ...


class WholeVolume:
    """The default view: the whole cached volume as a uint8 tensor under ``"volume"``."""

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        return {"volume": torch.from_numpy(np.array(volume))}


class CachedVolumeDataset(Dataset[dict[str, Any]]):
    """Samples from a :class:`VolumeCache`, one per row of ``items``.

    Args:
        items: One row per series: ``key``, ``cache`` (its cache directory), ``patient_id``,
            ``series_id`` and, for labelled data, one integer class column per target
            (``bowel`` ... ``spleen``). Rows may come from several caches.
        view: What to make of each volume (default :class:`WholeVolume`).
        seed: Seed for samples requested by plain index (without a :class:`SeededSampler`).

    A sample is the view's dict plus ``key``, ``index`` (its row), ``patient_id``,
    ``series_id`` and, when the items carry labels, ``labels``: ``(5,)`` int64 classes in
    schema target order.

    Items with image-level labels (columns ``slice_labels``, a ``(D, 2)`` array per series,
    and ``slice_known``, ``(2,)``; see :mod:`ctvoco.data.image_labels`) also give
    ``slice_targets`` ``(S, 2)`` float32, the rows of the slices the view took (its
    ``slice_indices(D)``; every slice for a view without one), and ``slice_mask`` ``(2,)``
    float32, 1 where a channel's targets are known.
    """

    def __init__(
        self,
        items: pd.DataFrame,
        view: VolumeView | Callable[..., dict[str, Any]] | None = None,
        seed: int = 0,
    ) -> None:
        missing = [c for c in ("key", "cache", "patient_id", "series_id") if c not in items.columns]
        if missing:
            raise ValueError(f"items lack column(s) {', '.join(missing)}")
        self.items = items.reset_index(drop=True)
        self.view = view or WholeVolume()
        self.seed = seed
        self.has_labels = all(t in self.items.columns for t in TARGETS)
        self.has_slice_labels = {"slice_labels", "slice_known"} <= set(self.items.columns)
        self._keys: Sequence[str] = self.items["key"].astype(str).tolist()
        self._caches = {
            root: VolumeCache(root) for root in self.items["cache"].astype(str).unique()
        }
        self._cache_of: Sequence[str] = self.items["cache"].astype(str).tolist()
        self._labels = (
            torch.tensor(np.ascontiguousarray(self.items[list(TARGETS)].to_numpy(dtype=np.int64)))
            if self.has_labels
            else None
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = (
            item if isinstance(item, tuple) else (int(item), sample_seed(self.seed, 0, int(item)))
        )
        key = self._keys[index]
        volume = self._caches[self._cache_of[index]].load(key, mmap=True)
        sample = self.view(volume, np.random.default_rng(seed))
        row = self.items.iloc[index]
        sample["key"] = key
        sample["index"] = index
        sample["patient_id"] = str(row["patient_id"])
        sample["series_id"] = str(row["series_id"])
        if self._labels is not None:
            sample["labels"] = self._labels[index]
        if self.has_slice_labels:
            sample.update(self._slice_sample(index, volume.shape[-3]))
        return sample

    def _slice_sample(self, index: int, depth: int) -> dict[str, torch.Tensor]:
        """``slice_targets`` and ``slice_mask`` of row ``index`` (a cached depth of ``depth``)."""
        labels = np.asarray(self.items.at[index, "slice_labels"])
        if labels.shape[0] != depth:
            raise DataError(
                f"series {self._keys[index]}: image-level labels cover {labels.shape[0]} slices "
                f"but the cached volume has {depth}"
            )
        pick = getattr(self.view, "slice_indices", None)
        rows = pick(depth) if callable(pick) else np.arange(depth)
        return {
            "slice_targets": torch.from_numpy(labels[rows].astype(np.float32)),
            "slice_mask": torch.as_tensor(
                np.asarray(self.items.at[index, "slice_known"], dtype=np.float32)
            ),
        }
