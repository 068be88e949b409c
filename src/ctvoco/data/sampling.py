"""A sampler that owns shuffling, sharding across ranks and per-sample random seeds.

Each item it yields is ``(index, sample_seed)``: the dataset draws all randomness of that
sample (crops, augmentation) from ``sample_seed``, which depends only on the sampler seed,
the epoch and the index. So a sample's views do not depend on the number of DataLoader
workers or on which worker loads it, differ between training epochs (evaluation samples stay fixed), and are
reproduced exactly when a run resumes at the same epoch.

A run resumed from a mid-epoch checkpoint continues with the samples that were not yet
seen in that epoch (:meth:`SeededSampler.resume`), so an interrupted and resumed run sees
the same data in the same order as an uninterrupted one.

Under DDP the sampler shards the (shuffled) order across ranks itself, like
``torch.utils.data.DistributedSampler``: when the dataset size is not a multiple of the
world size, the first indices of the order are repeated to pad every rank to the same
length (``drop_last=False``) or the tail is dropped (``drop_last=True``). Lightning's own
sampler replacement must then be off (``trainer.use_distributed_sampler=false``, the
default of ctvoco's trainer configs).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch."""
    return int(
        np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32).view(np.uint64)[0]
        >> 1
    )


class SeededSampler(Sampler[tuple[int, int]]):
    """Shuffle (per epoch), shard across ranks, attach a seed to every index.

    Args:
        size: Dataset length.
        shuffle: Shuffle the order each epoch (training) or keep it (evaluation).
        seed: Base seed; same seed and epoch give the same order and sample seeds.
        num_replicas: World size.
        rank: This process's rank.
        drop_last: Drop the tail instead of padding to a multiple of ``num_replicas``.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside a world of {num_replicas}")
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def resume(self, epoch: int, skip: int) -> None:
        """Skip the first ``skip`` samples of this rank in ``epoch`` (once), to continue a run
        that stopped mid-epoch exactly where it was; ``len`` stays the full epoch length."""
        self._resume = (epoch, skip) if skip > 0 else None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.size // self.num_replicas
        return -(-self.size // self.num_replicas)

    def order(self) -> np.ndarray:
        """The global order of this epoch (before sharding), ``(size,)`` indices."""
        if self.shuffle:
            return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        return np.arange(self.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order()
        per_rank = len(self)
        total = per_rank * self.num_replicas
        if total > len(order) and len(order) > 0:
            order = np.concatenate([order, np.resize(order, total - len(order))])
        order = order[:total]
        # Evaluation (no shuffling) sees the same views every epoch, so its metrics compare.
        epoch = self.epoch if self.shuffle else 0
        mine = order[self.rank : total : self.num_replicas]
        if self._resume is not None and self._resume[0] == self.epoch:
            mine = mine[self._resume[1] :]
            self._resume = None
        for index in mine:
            yield int(index), sample_seed(self.seed, epoch, int(index))
