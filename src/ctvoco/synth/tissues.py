"""Organ codes of the ``organs`` label map and the fixed HU values of the phantom's tissues.

Per-patient (contrast-phase) HU values live in :class:`~ctvoco.synth.anatomy.Anatomy`.
"""

from __future__ import annotations

from typing import Final

ORGAN_CODES: Final[dict[str, int]] = {
    "outside": 0,
    "soft_tissue": 1,
    "bone": 2,
    "aorta": 3,
    "liver": 4,
    "spleen": 5,
    "kidney_right": 6,
    "kidney_left": 7,
    "bowel": 8,
    "lung": 9,
    "table": 10,
}
"""Codes of the ``organs`` label map."""

OUTSIDE, SOFT, BONE, AORTA, LIVER, SPLEEN, KIDNEY_R, KIDNEY_L, BOWEL, LUNG, TABLE = range(11)
"""The codes of :data:`ORGAN_CODES`, by name."""


AIR_HU: Final = -1000.0
LUNG_HU: Final = -860.0
SKIN_HU: Final = 20.0
TABLE_SHELL_HU: Final = 90.0
TABLE_CORE_HU: Final = -40.0
CORTICAL_HU: Final = 700.0
CANCELLOUS_HU: Final = 250.0
BONE_PLATE_HU: Final = 480.0
DISC_HU: Final = 90.0
CSF_HU: Final = 15.0
BOWEL_WALL_HU: Final = 60.0
THICK_WALL_HU: Final = 80.0
FLUID_HU: Final = 10.0
STOOL_HU: Final = 25.0
SINUS_FAT_HU: Final = -80.0
