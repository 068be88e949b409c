"""Test-time augmentation of the classifier: the flips it may average over.

A flip reverses axes of a ``(B, S, C, H, W)`` batch of slice stacks: ``z`` the slice order,
``h`` the rows, ``w`` the columns. The probabilities of every flipped view are averaged by
:meth:`~ctvoco.classify.InjuryClassifier.predict_proba`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctvoco.errors import ArgumentError

TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""Identity, horizontal, vertical and both flips of ``(..., H, W)`` slices."""

TTA_AXES: dict[str, int] = {"z": 1, "h": -2, "w": -1}
"""Axes of a ``(B, S, C, H, W)`` batch a test-time flip may reverse: ``z`` reverses the
slice order, ``h`` flips rows (vertical), ``w`` flips columns (horizontal)."""

DEFAULT_TTA_FLIPS: tuple[tuple[str, ...], ...] = ((), ("w",), ("h",), ("h", "w"))
"""The views of ``tta``: identity and the three in-plane flips (:data:`TTA_FLIPS`)."""

RESEARCH_TTA_FLIPS: tuple[tuple[str, ...], ...] = (
    (),
    ("z", "h", "w"),
    ("z", "h"),
    ("z", "w"),
    ("h", "w"),
)
"""The research code's test-time views: identity and four flips, three of them reversing
the slice order."""


def check_tta_flips(flips: object) -> tuple[tuple[str, ...], ...]:
    """The test-time views of ``tta_flips``, checked: a non-empty list of axis lists.

    Raises:
        ArgumentError: Naming ``tta_flips``, the value and what it must be.
    """
    allowed = ", ".join(TTA_AXES)
    problem = ArgumentError(
        "tta_flips",
        " must be a non-empty list of flips, each a list of distinct axes from "
        f"{allowed} ([] is the image itself); got {flips!r}",
    )
    if isinstance(flips, (str, bytes)) or not isinstance(flips, Sequence) or not flips:
        raise problem
    checked = []
    for axes in flips:
        if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence):
            raise problem
        if any(a not in TTA_AXES for a in axes) or len(set(axes)) != len(axes):
            raise problem
        checked.append(tuple(axes))
    return tuple(checked)


def tta_dims(flips: Sequence[Sequence[str]]) -> tuple[tuple[int, ...], ...]:
    """Tensor dims of a ``(B, S, C, H, W)`` batch that each of ``flips`` reverses."""
    return tuple(tuple(TTA_AXES[a] for a in axes) for axes in flips)
