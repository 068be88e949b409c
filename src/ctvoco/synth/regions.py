"""Where things are in an anatomy: body layers, cavity, diaphragm, organ parenchyma."""

from __future__ import annotations

from typing import Final

import numpy as np

from ctvoco.synth.anatomy import Anatomy
from ctvoco.synth.body import P_POST, PROFILE_Z
from ctvoco.synth.shapes import Ellipsoid, ellipsoid_s

DOME_CURVATURE: Final = (0.0065, 0.003, 0.009)
"""Curvature of each diaphragm dome (lateral, anterior, posterior), mm per mm^2 from its apex.

The lung bases reach deepest posteriorly (the costophrenic recesses)."""

DOME_DEPTH: Final = 95.0
"""Deepest point of the posterior costophrenic recess below a dome apex, mm."""

DIAPHRAGM_MM: Final = 5.0
"""Thickness of the diaphragm muscle below the lung bases, mm."""


def _section_insets(anat: Anatomy, z: np.ndarray, layer: str) -> tuple[np.ndarray, ...]:
    """Insets ``(lateral, anterior, posterior)`` of a body layer from the skin, mm."""
    if layer == "skin":
        return (np.full_like(z, 0.0),) * 3
    if layer == "dermis":
        return (np.full_like(z, 2.0),) * 3
    fl, fa, fp = anat.fat_thickness
    if layer == "fat":
        return np.full_like(z, fl), np.full_like(z, fa), np.full_like(z, fp)
    ml, ma, mp = anat.muscle_thickness
    # Iliac and gluteal muscles thicken the pelvic wall.
    pelvis = np.interp(z, [anat.iliac_crest_z, anat.iliac_crest_z + 70.0], [0.0, 22.0])
    return fl + ml + pelvis, np.full_like(z, fa + ma), fp + mp + 0.5 * pelvis


def halfwidth(anat: Anatomy, y: np.ndarray, z: np.ndarray, layer: str) -> np.ndarray:
    """Half width ``|x - center_x|`` of a body layer at ``(y, z)``; 0 outside the layer.

    Layers: ``skin`` (body outline), ``dermis``, ``fat`` (inner boundary of subcutaneous fat),
    ``cavity`` (inner boundary of the muscle wall).
    """
    il, ia, ip = _section_insets(anat, np.asarray(z, dtype=float), layer)
    a = anat.body_half_width * np.interp(z, PROFILE_Z, anat.width_profile) - il
    ba = anat.body_half_depth_anterior * np.interp(z, PROFILE_Z, anat.belly_profile) - ia
    bp = anat.body_half_depth_posterior - ip
    dy = y - (anat.back_y - anat.body_half_depth_posterior)
    anterior = np.sqrt(np.clip(1.0 - (dy / ba) ** 2, 0.0, None))
    posterior = np.clip(1.0 - np.abs(dy / bp) ** P_POST, 0.0, None) ** (1.0 / P_POST)
    return a * np.where(dy < 0, anterior, posterior)


def in_cavity(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Whether points lie inside the abdominal/thoracic cavity (inside the muscle wall)."""
    return np.abs(x - anat.center_x) < halfwidth(anat, y, z, "cavity")


def diaphragm_z(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Craniocaudal position of the lung bases (top of the diaphragm) at ``(x, y)``.

    Two paraboloid domes; the diaphragm is the higher (smaller ``z``) of the two, which
    leaves a continuous saddle at the midline where the heart rests.
    """
    k_lat, k_ant, k_post = DOME_CURVATURE
    surface = None
    for xa, ya, za in anat.diaphragm_domes:
        dy = y - ya
        dome = za + k_lat * (x - xa) ** 2 + np.where(dy < 0, k_ant, k_post) * dy**2
        dome = np.minimum(dome, za + DOME_DEPTH)
        surface = dome if surface is None else np.minimum(surface, dome)
    return surface


def below_diaphragm(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Whether points lie below the diaphragm muscle (abdomen, not thorax)."""
    return z >= diaphragm_z(anat, x, y) + DIAPHRAGM_MM


def kidney_sinus(kidney: Ellipsoid) -> tuple[Ellipsoid, Ellipsoid]:
    """Renal sinus (fat) and renal pelvis (urine) of a kidney, opening at its hilum (+x)."""
    a, b, c = kidney.half_axes
    sinus = Ellipsoid(
        tuple(kidney.point((0.6, 0.0, 0.0))), (0.55 * a, 0.45 * b, 0.5 * c), kidney.angles
    )
    pelvis = Ellipsoid(
        tuple(kidney.point((0.45, 0.0, 0.05))), (0.35 * a, 0.3 * b, 0.28 * c), kidney.angles
    )
    return sinus, pelvis


def organ_contains(
    anat: Anatomy, organ: str, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Whether points lie in the parenchyma of ``liver``, ``spleen``, ``kidney_right/left``."""
    if organ == "liver":
        inside = (
            np.minimum(ellipsoid_s(anat.liver[0], x, y, z), ellipsoid_s(anat.liver[1], x, y, z))
            <= 1.0
        )
        inside &= in_cavity(anat, x, y, z) & below_diaphragm(anat, x, y, z)
        inside &= (ellipsoid_s(anat.kidneys[0], x, y, z) > 1.05) & ~_near_spine(anat, x, y)
        if anat.gallbladder is not None:
            inside &= ellipsoid_s(anat.gallbladder, x, y, z) > 1.1
        return inside
    if organ == "spleen":
        inside = ellipsoid_s(anat.spleen, x, y, z) <= 1.0
        inside &= ellipsoid_s(anat.spleen_hilum, x, y, z) > 1.0
        inside &= in_cavity(anat, x, y, z) & below_diaphragm(anat, x, y, z)
        return inside & (ellipsoid_s(anat.kidneys[1], x, y, z) > 1.05)
    kidney = anat.kidneys[0 if organ == "kidney_right" else 1]
    sinus, _ = kidney_sinus(kidney)
    return (ellipsoid_s(kidney, x, y, z) <= 0.95) & (ellipsoid_s(sinus, x, y, z) > 1.1)


def _near_spine(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The spine and the great vessels in front of it (painted over the solid organs)."""
    cx, vb_y = anat.vertebra_xy
    hx, hy = anat.vertebra_half_axes
    return (np.abs(x - cx) < hx + 30.0) & (y > vb_y - hy - 32.0)


def organ_radius(
    anat: Anatomy, organ: str, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Normalised ellipsoid radius of an organ (``<= 1`` inside, ignoring clipping)."""
    if organ == "liver":
        return np.minimum(ellipsoid_s(anat.liver[0], x, y, z), ellipsoid_s(anat.liver[1], x, y, z))
    if organ == "spleen":
        return ellipsoid_s(anat.spleen, x, y, z)
    return ellipsoid_s(anat.kidneys[0 if organ == "kidney_right" else 1], x, y, z)
