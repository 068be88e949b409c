"""Contrast phases of the synthetic series and the tissue attenuation in each.

A trauma CT is acquired after an intravenous contrast bolus. In the late arterial phase
(about 35 s after injection) the aorta is brightest, the renal cortex enhances far more than
the medulla (corticomedullary differentiation), the liver has barely started to enhance and
the spleen is heterogeneous, with alternating bright and dark arciform bands. In the portal
venous phase (about 70 s) the liver and spleen are homogeneous and near 100-130 HU, the
portal veins are bright and the aorta has faded. :data:`PHASE_HU` holds a range per tissue
and phase; docs/phantom.md lists them with their sources.

A patient keeps one quantile per tissue for all its series, so a patient whose liver
enhances strongly in one phase enhances strongly in the other.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np

Phase = Literal["arterial", "portal_venous"]
"""Contrast phase of a series: late arterial or portal venous."""

PHASES: Final[tuple[Phase, ...]] = ("arterial", "portal_venous")

ARTERIAL_SHARE: Final = 0.3
"""Share of patients whose first series is late arterial (the rest start portal venous)."""

PHASE_HU: Final[dict[str, dict[Phase, tuple[float, float]]]] = {
    "fat": {"arterial": (-110.0, -90.0), "portal_venous": (-110.0, -90.0)},
    "muscle": {"arterial": (45.0, 58.0), "portal_venous": (45.0, 60.0)},
    "liver": {"arterial": (65.0, 85.0), "portal_venous": (100.0, 125.0)},
    "spleen": {"arterial": (100.0, 130.0), "portal_venous": (105.0, 130.0)},
    "kidney_cortex": {"arterial": (170.0, 230.0), "portal_venous": (160.0, 200.0)},
    "kidney_medulla": {"arterial": (70.0, 100.0), "portal_venous": (110.0, 140.0)},
    "aorta": {"arterial": (250.0, 350.0), "portal_venous": (150.0, 210.0)},
    "portal": {"arterial": (100.0, 140.0), "portal_venous": (155.0, 195.0)},
    "ivc": {"arterial": (70.0, 110.0), "portal_venous": (120.0, 160.0)},
}
"""HU range ``(low, high)`` per tissue and phase (Hounsfield units)."""

SPLEEN_BAND_HU: Final = (20.0, 30.0)
"""Amplitude range (HU) of the spleen's arciform bands in the arterial phase."""


def tissue_quantiles(rng: np.random.Generator) -> tuple[float, ...]:
    """One uniform quantile per tissue of :data:`PHASE_HU`, in its key order."""
    return tuple(float(q) for q in rng.uniform(0.0, 1.0, len(PHASE_HU)))


def phase_hu(phase: Phase, quantiles: tuple[float, ...]) -> dict[str, float]:
    """Tissue HU of one phase at a patient's quantiles.

    Args:
        phase: The contrast phase.
        quantiles: The patient's :func:`tissue_quantiles`.

    Returns:
        ``{tissue: HU}`` for every tissue of :data:`PHASE_HU`.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown contrast phase {phase!r}; expected one of {PHASES}")
    return {
        tissue: low + q * (high - low)
        for (tissue, ranges), q in zip(PHASE_HU.items(), quantiles, strict=True)
        for low, high in (ranges[phase],)
    }


def series_phases(n_series: int, rng: np.random.Generator) -> tuple[Phase, ...]:
    """Phases of a patient's series: the first is arterial with :data:`ARTERIAL_SHARE`,
    portal venous otherwise; a second series is in the other phase."""
    first: Phase = "arterial" if rng.random() < ARTERIAL_SHARE else "portal_venous"
    other: Phase = "portal_venous" if first == "arterial" else "arterial"
    return (first, other)[:n_series]
