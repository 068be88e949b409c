"""SeededSampler: per-epoch shuffling, sharding across ranks with padding, sample seeds."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ctvoco.data.sampling import SeededSampler, sample_seed


def epoch_items(size: int, world: int, *, epoch: int = 0, **kwargs) -> list[list[tuple[int, int]]]:
    """What every rank yields in one epoch."""
    out = []
    for rank in range(world):
        sampler = SeededSampler(size, num_replicas=world, rank=rank, **kwargs)
        sampler.set_epoch(epoch)
        items = list(sampler)
        assert len(items) == len(sampler)
        out.append(items)
    return out


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("size", [0, 1, 10, 17])
def test_single_process_yields_every_index_once(size: int, shuffle: bool) -> None:
    sampler = SeededSampler(size, shuffle=shuffle, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = [i for i, _ in sampler]
        assert sorted(indices) == list(range(size))
        assert len(sampler) == size
        if not shuffle:
            assert indices == list(range(size))


# size, world, drop_last -> per-rank length, how many indices appear twice, how many never
SHARDING_CASES = [
    (10, 1, False, 10, 0, 0),
    (10, 2, False, 5, 0, 0),
    (10, 5, True, 2, 0, 0),
    (10, 3, False, 4, 2, 0),
    (10, 4, False, 3, 2, 0),
    (10, 3, True, 3, 0, 1),
    (10, 4, True, 2, 0, 2),
    (2, 4, False, 1, 0, 0),  # 2 indices, 4 slots: the order is repeated twice
]


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(
    ("size", "world", "drop_last", "per_rank", "doubled", "missing"), SHARDING_CASES
)
def test_ranks_cover_the_dataset_up_to_padding(
    size, world, drop_last, per_rank, doubled, missing, shuffle
) -> None:
    ranks = epoch_items(size, world, epoch=2, shuffle=shuffle, seed=5, drop_last=drop_last)
    assert [len(r) for r in ranks] == [per_rank] * world
    counts = Counter(i for items in ranks for i, _ in items)
    assert sum(counts.values()) == per_rank * world
    assert set(counts) <= set(range(size))
    if size >= world:
        assert sum(1 for c in counts.values() if c == 2) == doubled
        assert max(counts.values()) <= 2
        assert size - len(counts) == missing
    else:
        assert set(counts) == set(range(size))
    # The padding repeats the first indices of this epoch's global order, like
    # torch's DistributedSampler; drop_last drops the tail of the order.
    sampler = SeededSampler(size, shuffle=shuffle, seed=5)
    sampler.set_epoch(2)
    order = sampler.order().tolist()
    total = per_rank * world
    expected = (order * (total // size + 1))[:total]
    assert Counter(expected) == counts
    interleaved = [ranks[k % world][k // world][0] for k in range(total)]
    assert interleaved == expected


def test_padding_matches_torch_distributed_sampler() -> None:
    from torch.utils.data import DistributedSampler

    for world in (3, 4):
        for rank in range(world):
            ours = SeededSampler(10, shuffle=False, num_replicas=world, rank=rank)
            torch_sampler = DistributedSampler(range(10), world, rank, shuffle=False)
            assert [i for i, _ in ours] == list(torch_sampler)


def test_shuffle_changes_with_the_epoch_and_repeats_for_a_seed() -> None:
    sampler = SeededSampler(50, shuffle=True, seed=1)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        orders.append([i for i, _ in sampler])
    assert orders[0] != orders[1] != orders[2]
    assert orders[0] != orders[2]
    again = SeededSampler(50, shuffle=True, seed=1)
    again.set_epoch(1)
    assert [i for i, _ in again] == orders[1]
    other_seed = SeededSampler(50, shuffle=True, seed=2)
    other_seed.set_epoch(1)
    assert [i for i, _ in other_seed] != orders[1]


def test_training_seeds_change_with_the_epoch() -> None:
    sampler = SeededSampler(20, shuffle=True, seed=9)
    seeds = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seeds.append(dict(sampler))
    assert all(seeds[0][i] != seeds[1][i] for i in range(20))
    assert seeds[0] == {i: sample_seed(9, 0, i) for i in range(20)}
    assert seeds[1] == {i: sample_seed(9, 1, i) for i in range(20)}


def test_evaluation_seeds_do_not_change_with_the_epoch() -> None:
    sampler = SeededSampler(20, shuffle=False, seed=9)
    first = list(sampler)
    for epoch in (1, 5):
        sampler.set_epoch(epoch)
        assert list(sampler) == first
    assert dict(first) == {i: sample_seed(9, 0, i) for i in range(20)}


@pytest.mark.parametrize("shuffle", [True, False])
def test_seeds_do_not_depend_on_rank_or_world(shuffle: bool) -> None:
    seen: dict[int, int] = {}
    for world in (1, 2, 3, 4):
        for items in epoch_items(10, world, epoch=3, shuffle=shuffle, seed=11):
            for index, seed in items:
                assert seen.setdefault(index, seed) == seed
    epoch = 3 if shuffle else 0
    assert seen == {i: sample_seed(11, epoch, i) for i in range(10)}


def test_sample_seed_is_a_63_bit_function_of_seed_epoch_index() -> None:
    values = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(values) == 3 * 3 * 50
    assert all(0 <= v < 2**63 for v in values)
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3)
    rng = np.random.default_rng(sample_seed(1, 2, 3))  # usable as a numpy seed
    assert 0 <= rng.random() < 1


@pytest.mark.parametrize(("world", "rank"), [(0, 0), (2, 2), (2, -1), (-1, 0)])
def test_bad_rank_is_refused(world: int, rank: int) -> None:
    with pytest.raises(ValueError, match=f"rank {rank} is outside a world of {world}"):
        SeededSampler(10, shuffle=True, num_replicas=world, rank=rank)
