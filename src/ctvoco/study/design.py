"""The runs of a study: pretraining runs, finetuning runs and how they are paired.

Finetuning seed ``s`` of every arm sees the same labelled patients, head initialisation
and data order, so the arms' scores at one seed are paired. The VoCo arms of finetuning
seed number ``i`` start from pretraining seed ``pretrain_seeds[i % P]``: with 5 finetuning
and 2 pretraining seeds, pretraining seed 0 serves finetuning seeds 0, 2 and 4 and seed 1
serves 1 and 3, so the variation between pretraining runs is part of the VoCo arms'
spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ctvoco.errors import UserError
from ctvoco.study.arms import Arm


@dataclass(frozen=True)
class PretrainRun:
    """One VoCo pretraining run.

    Attributes:
        imagenet: Whether the backbone starts from ImageNet weights (else random).
        seed: The pretraining seed.
    """

    imagenet: bool
    seed: int

    @property
    def name(self) -> str:
        """The run's folder name, e.g. ``voco_from_random_seed0``."""
        return f"voco_from_{'imagenet' if self.imagenet else 'random'}_seed{self.seed}"


@dataclass(frozen=True)
class FinetuneRun:
    """One finetuning run: an arm on a labelled fraction with a seed.

    Attributes:
        arm: The initialisation.
        fraction: Share of the training pool's patients that are labelled.
        seed: The finetuning seed (labelled subset, head init, data order).
        pretrain: The pretraining run whose export it starts from (VoCo arms only).
    """

    arm: Arm
    fraction: float
    seed: int
    pretrain: PretrainRun | None

    @property
    def name(self) -> str:
        """The run's folder name, e.g. ``fraction0.1_imagenet_voco_seed3``."""
        return f"fraction{self.fraction:g}_{self.arm.slug}_seed{self.seed}"


def check_design(
    fractions: Sequence[float], seeds: Sequence[int], pretrain_seeds: Sequence[int]
) -> None:
    """Refuse a design the report cannot use.

    Raises:
        UserError: A fraction outside ``(0, 1]``, repeated seeds, or no seeds.
    """
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad or not fractions:
        raise UserError(f"--fractions must be in (0, 1]; got {list(fractions)}")
    for option, values in (("--seeds", seeds), ("--pretrain-seeds", pretrain_seeds)):
        if not values or len(set(values)) != len(values):
            raise UserError(f"{option} must be distinct seeds (at least one); got {list(values)}")


def plan_runs(
    arms: Sequence[Arm],
    fractions: Sequence[float],
    seeds: Sequence[int],
    pretrain_seeds: Sequence[int],
) -> tuple[list[PretrainRun], list[FinetuneRun]]:
    """Every pretraining and finetuning run of the study, pretraining first.

    Returns:
        ``(pretraining, finetuning)``: the pretraining runs the VoCo arms need (none when
        no arm uses VoCo), and one finetuning run per seed, fraction and arm, seed-major so
        that a study stopped early has whole seeds.
    """
    check_design(fractions, seeds, pretrain_seeds)
    voco_inits = sorted({arm.imagenet for arm in arms if arm.voco})
    pretraining = [
        PretrainRun(imagenet, seed) for imagenet in voco_inits for seed in pretrain_seeds
    ]
    finetuning = []
    for i, seed in enumerate(seeds):
        pretrain_seed = pretrain_seeds[i % len(pretrain_seeds)]
        for fraction in fractions:
            for arm in arms:
                source = PretrainRun(arm.imagenet, pretrain_seed) if arm.voco else None
                finetuning.append(FinetuneRun(arm, fraction, seed, source))
    return pretraining, finetuning
