"""Synthetic abdominal CT: phantoms with RSNA-style injury labels (no real data needed)."""

from __future__ import annotations

from ctvoco.synth.phantom import (
    DEFAULT_PREVALENCE,
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    INJURY_CODES,
    ORGAN_CODES,
    Anatomy,
    Ellipsoid,
    InjuryLabels,
    Phantom,
    Tube,
    draw_anatomy,
    draw_injury_labels,
    make_phantom,
    render_volume,
)

__all__ = [
    "DEFAULT_PREVALENCE",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "INJURY_CODES",
    "ORGAN_CODES",
    "Anatomy",
    "Ellipsoid",
    "InjuryLabels",
    "Phantom",
    "Tube",
    "draw_anatomy",
    "draw_injury_labels",
    "make_phantom",
    "render_volume",
]
