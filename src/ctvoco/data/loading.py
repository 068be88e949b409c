"""What every data module shares: item tables of a volume cache and resumable loaders.

:func:`cache_items` turns a cache's manifest into the item table that
:class:`~ctvoco.data.dataset.CachedVolumeDataset` reads (training and prediction alike);
:class:`VolumeDataModule` builds seeded, sharded, resumable loaders over such tables.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.data.dataset import CachedVolumeDataset, VolumeView
from ctvoco.data.sampling import SeededSampler
from ctvoco.errors import ArgumentError, UserError

log = logging.getLogger(__name__)

ITEM_COLUMNS = ["key", "cache", "patient_id", "series_id"]
"""The columns of an item table: cache key, cache folder, patient and series id."""


def cache_items(cache: VolumeCache, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    """The item rows of the series in ``cache`` that are ready to read.

    Args:
        cache: The volume cache.
        manifest: Rows of ``cache.manifest()`` to consider (default: all of them).

    Returns:
        :data:`ITEM_COLUMNS` of the rows whose status is ``ok`` and whose volume file is
        present, ids as strings (a missing series id as ``""``), in manifest order.
    """
    manifest = cache.manifest() if manifest is None else manifest
    ready = manifest[manifest["status"] == "ok"].copy()
    ready = ready[[cache.volume_path(str(k)).exists() for k in ready["key"]]]
    ready["cache"] = str(cache.root)
    ready["patient_id"] = ready["patient_id"].astype(str)
    ready["series_id"] = ready["series_id"].fillna("").astype(str)
    return ready[ITEM_COLUMNS].reset_index(drop=True)


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning recognises as resumable mid-epoch.

    The position in the epoch is not stored here: on resume the data module reads it from the
    restored training progress and the :class:`SeededSampler` skips what was already seen.
    """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None


class VolumeDataModule(pl.LightningDataModule):
    """Loaders over item tables; subclasses say which series are train and validation.

    Args:
        batch_size: Training batch size (volumes per step per process).
        val_batch_size: Validation batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        pin_memory: Pin host memory (GPU training).
        persistent_workers: Keep workers alive between epochs.
        prefetch_factor: Batches prefetched per worker.
        seed: Seed of shuffling, splits and per-sample randomness.
        views: Transform for training samples.
        val_views: Transform for validation samples (default: ``views``).
        drop_last: Drop the last incomplete training batch.
    """

    def __init__(
        self,
        *,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = 2,
        seed: int = 42,
        views: VolumeView | None = None,
        val_views: VolumeView | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ArgumentError("batch_size", f" must be at least 1; got {batch_size}")
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self.seed = seed
        self.views = views
        self.val_views = val_views
        self.drop_last = drop_last
        self.train_set: CachedVolumeDataset | None = None
        self.val_set: CachedVolumeDataset | None = None
        #: ``(epoch, batches done)`` the last training loader was built to continue from.
        self.train_resume_point: tuple[int, int] | None = None

    # -- to be provided by subclasses ---------------------------------------------------
    def split_items(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(train_items, val_items)`` tables (see :class:`CachedVolumeDataset`)."""
        raise NotImplementedError

    def check_inputs(self) -> None:
        """Raise a :class:`UserError` now if the data cannot be found (before any work)."""

    def check_views_fit_model(self) -> None:
        """Let the views refuse the model they are to feed (e.g. VoCo's grid and crop size).

        Views with a ``check_model(model)`` method are asked once a trainer has attached
        a model; nothing happens outside a trainer.
        """
        trainer = self.trainer
        model = getattr(trainer, "lightning_module", None) if trainer is not None else None
        if model is None:
            return
        for views in (self.views, self.val_views):
            check = getattr(views, "check_model", None)
            if check is not None:
                check(model)

    # -- Lightning hooks ------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.check_views_fit_model()
        train_items, val_items = self.split_items()
        if train_items.empty and stage in (None, "fit"):
            raise UserError(
                f"{type(self).__name__}: no training volumes (check the cache and splits)"
            )
        self.train_set = CachedVolumeDataset(train_items, self.views, seed=self.seed)
        self.val_set = CachedVolumeDataset(val_items, self.val_views or self.views, seed=self.seed)
        log.info(
            "%s: %d training and %d validation series",
            type(self).__name__,
            len(train_items),
            len(val_items),
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return self._loader(self.val_set, shuffle=False, batch_size=self.val_batch_size)

    def _loader(
        self, dataset: CachedVolumeDataset, *, shuffle: bool, batch_size: int
    ) -> DataLoader:
        world, rank = self._world()
        sampler = SeededSampler(
            len(dataset),
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            drop_last=self.drop_last and shuffle,
        )
        if shuffle:
            epoch, done = self._resume_point()
            per_epoch = (
                len(sampler) // batch_size if self.drop_last else -(-len(sampler) // batch_size)
            )
            if done and done >= per_epoch:
                # saved after the last batch of an epoch: the next one starts from its beginning
                epoch, done = epoch + 1, 0
            # Workers prefetch as soon as the iterator exists, before Lightning sets the epoch.
            sampler.set_epoch(epoch)
            sampler.resume(epoch, done * batch_size)
            self.train_resume_point = (epoch, done)
        return ResumableDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            drop_last=self.drop_last and shuffle,
            # The loader's own generator: creating iterators never touches the global RNG.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _resume_point(self) -> tuple[int, int]:
        """``(epoch, training batches already done in it)`` when resuming mid-epoch."""
        loop = getattr(self.trainer, "fit_loop", None)
        if loop is None:
            return 0, 0
        epochs = loop.epoch_progress.current
        if epochs.started and epochs.processed == epochs.started > epochs.completed:
            # saved at the end of an epoch's training: the next epoch starts from its beginning
            return int(epochs.processed), 0
        return int(self.trainer.current_epoch), int(
            loop.epoch_loop.batch_progress.current.processed
        )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return 1, 0
        connector = getattr(trainer, "_accelerator_connector", None)
        if getattr(connector, "use_distributed_sampler", False):
            raise UserError(
                "ctvoco's data modules shard data across processes themselves; set "
                "trainer.use_distributed_sampler=false"
            )
        return trainer.world_size, trainer.global_rank
