"""Shared helpers of the synth tests: cached phantom renders and small measurements."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from ctvoco.synth import DEFAULT_SHAPE, DEFAULT_SPACING, InjuryLabels, Phantom, make_phantom

HEALTHY = (0, 0, 0, 0, 0)
SEEDS = (0, 1, 2)


@functools.cache
def render(
    seed: int,
    classes: tuple[int, ...] = HEALTHY,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    z_offset_mm: float = 0.0,
) -> Phantom:
    """A phantom of patient ``seed`` with the given labels (cached: do not modify it)."""
    return make_phantom(
        seed, shape, spacing, labels=InjuryLabels.from_classes(classes), z_offset_mm=z_offset_mm
    )


def labels_of(**targets: int) -> tuple[int, ...]:
    """Class indices of the given targets (the others healthy), in ``TARGETS`` order."""
    return InjuryLabels(**targets).as_classes()


def centroid(mask: np.ndarray) -> np.ndarray:
    """``(slice, row, column)`` centroid of a non-empty mask."""
    assert mask.any()
    return np.array(ndimage.center_of_mass(mask))
