"""The runs of a study and how they pair."""

from __future__ import annotations

import pytest

from ctvoco.errors import UserError
from ctvoco.study.arms import ARMS
from ctvoco.study.design import plan_runs


def test_every_arm_fraction_and_seed_runs_once_and_voco_arms_share_pretraining() -> None:
    arms = [ARMS["scratch"], ARMS["voco"], ARMS["imagenet"], ARMS["imagenet+voco"]]
    pretraining, finetuning = plan_runs(arms, [0.1, 1.0], [0, 1, 2, 3, 4], [10, 11])
    assert [p.name for p in pretraining] == [
        "voco_from_random_seed10",
        "voco_from_random_seed11",
        "voco_from_imagenet_seed10",
        "voco_from_imagenet_seed11",
    ]
    assert len(finetuning) == 4 * 2 * 5
    assert len({r.name for r in finetuning}) == len(finetuning)
    by_seed = {}
    for run in finetuning:
        if run.arm.voco:
            assert run.pretrain is not None and run.pretrain.imagenet == run.arm.imagenet
            by_seed.setdefault(run.seed, set()).add(run.pretrain.seed)
        else:
            assert run.pretrain is None
    # finetuning seeds alternate between the pretraining seeds, one pretraining per seed
    assert by_seed == {0: {10}, 1: {11}, 2: {10}, 3: {11}, 4: {10}}


def test_without_a_voco_arm_nothing_is_pretrained() -> None:
    pretraining, finetuning = plan_runs([ARMS["scratch"]], [0.5], [0, 1], [0])
    assert pretraining == [] and len(finetuning) == 2


def test_runs_are_seed_major() -> None:
    _, finetuning = plan_runs([ARMS["scratch"], ARMS["voco"]], [0.1, 1.0], [3, 1], [0])
    assert [r.seed for r in finetuning] == [3, 3, 3, 3, 1, 1, 1, 1]


@pytest.mark.parametrize(
    ("fractions", "seeds", "pretrain_seeds", "message"),
    [
        ([0.0, 1.0], [0], [0], r"--fractions must be in \(0, 1\]"),
        ([1.5], [0], [0], r"--fractions must be in \(0, 1\]"),
        ([0.5], [0, 0], [0], r"--seeds must be distinct seeds"),
        ([0.5], [0], [], r"--pretrain-seeds must be distinct seeds"),
    ],
)
def test_bad_designs_are_refused(fractions, seeds, pretrain_seeds, message) -> None:
    with pytest.raises(UserError, match=message):
        plan_runs([ARMS["voco"]], fractions, seeds, pretrain_seeds)
