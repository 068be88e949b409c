"""Body size, layers and skeleton of a synthetic patient: the frame its organs are placed in.

Every draw here comes from the patient's generator in a fixed order, so a seed always gives
the same patient. Lengths are millimetres in the scanner frame (see :mod:`ctvoco.synth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from ctvoco.synth.shapes import Vec3

P_POST: Final = 3.0
"""Superellipse exponent of the posterior half of the body section (a flat back)."""

PROFILE_Z: Final[tuple[float, ...]] = (-100.0, 50.0, 150.0, 250.0, 350.0, 500.0)
"""Knots (mm) of the craniocaudal body-shape profiles."""


@dataclass(frozen=True)
class Draw:
    """Uniform draws from a patient's generator, sized by the patient's organ scale.

    Attributes:
        rng: The patient's generator.
        organ_scale: Factor on every organ size (larger bodies have larger organs).
    """

    rng: np.random.Generator
    organ_scale: float = 1.0

    def u(self, lo: float, hi: float) -> float:
        """A uniform number in ``[lo, hi)``."""
        return float(self.rng.uniform(lo, hi))

    def jitter(self, mm: float = 10.0) -> np.ndarray:
        """A uniform ``(3,)`` offset of up to ``mm`` along each axis."""
        return self.rng.uniform(-mm, mm, size=3)

    def size(self, *half_axes: float) -> Vec3:
        """Half axes scaled by the organ scale and by +-15% of this organ's own."""
        scale = self.u(0.85, 1.15) * self.organ_scale
        return (half_axes[0] * scale, half_axes[1] * scale, half_axes[2] * scale)


@dataclass(frozen=True)
class Body:
    """Body size and layers, and the frame of the abdominal cavity at the kidney level.

    Attributes:
        scale: Overall body size factor.
        organ_scale: Organ size factor (the square root of ``scale``).
        center_x: Body midline ``x``.
        half_width: Half width of the body at the reference level.
        depth_ant: Midline-to-anterior-skin depth at the reference level.
        depth_post: Midline-to-back depth.
        width_profile: Width factors at :data:`PROFILE_Z`.
        belly_profile: Anterior depth factors at :data:`PROFILE_Z`.
        fat: Subcutaneous fat ``(lateral, anterior, posterior)``.
        muscle: Abdominal wall muscle ``(lateral, anterior, posterior)``.
        table_y: Top surface of the CT table at the midline.
        table_curvature: The table top rises by ``curvature * x**2`` towards its edges.
        back_y: Posterior skin surface ``y`` (the flat back).
    """

    scale: float
    organ_scale: float
    center_x: float
    half_width: float
    depth_ant: float
    depth_post: float
    width_profile: tuple[float, ...]
    belly_profile: tuple[float, ...]
    fat: Vec3
    muscle: Vec3
    table_y: float
    table_curvature: float
    back_y: float

    @property
    def yc(self) -> float:
        """``y`` of the cavity's reference centre (the body's midline depth)."""
        return self.back_y - self.depth_post

    @property
    def cav_a(self) -> float:
        """Half width of the cavity (inside fat and muscle)."""
        return self.half_width - self.fat[0] - self.muscle[0]

    @property
    def cav_ant(self) -> float:
        """Anterior depth of the cavity from ``yc``."""
        return self.depth_ant - self.fat[1] - self.muscle[1]

    @property
    def cav_post(self) -> float:
        """Posterior depth of the cavity from ``yc``."""
        return self.depth_post - self.fat[2] - self.muscle[2]


@dataclass(frozen=True)
class Skeleton:
    """Spine, diaphragm domes, ribs and pelvis heights.

    Attributes:
        vb_half: Half width and half depth of a lumbar vertebral body.
        vb_y: ``y`` of the vertebral bodies' centre.
        pitch: Craniocaudal distance between vertebrae (body + disc).
        dome_r: ``z`` of the right diaphragm dome's apex.
        dome_l: ``z`` of the left diaphragm dome's apex.
        l1_top: Top of the first lumbar vertebral body.
        ribs: ``(z at the spine, descent per radian, first angle reached)`` per rib.
        iliac_crest: Top of the iliac wings.
    """

    vb_half: tuple[float, float]
    vb_y: float
    pitch: float
    dome_r: float
    dome_l: float
    l1_top: float
    ribs: tuple[Vec3, ...]
    iliac_crest: float

    @property
    def s1_top(self) -> float:
        """Top of the sacrum (five lumbar vertebrae below L1)."""
        return self.l1_top + 5 * self.pitch


def draw_body(rng: np.random.Generator) -> Body:
    """Draw body size (+-13%), habitus, fat and muscle layers and the table under the patient.

    Habitus is an adiposity factor on the subcutaneous fat: the fat of the leanest patients
    is about a third of the typical thickness, the most obese about 1.6 times it, and half of
    the extra fat widens the body (the rest narrows the abdominal cavity).
    """
    u = Draw(rng).u
    body_scale = u(0.87, 1.13)
    adiposity = u(0.35, 1.6)
    center_x = u(-8.0, 8.0)
    fat_factor = body_scale * adiposity
    fat = (u(12.0, 20.0) * fat_factor, u(14.0, 24.0) * fat_factor, u(10.0, 16.0) * fat_factor)
    half_width = 140.0 * body_scale * u(0.95, 1.05) + 0.5 * (fat[0] - 16.0 * body_scale)
    depth_ant = 110.0 * body_scale * u(0.93, 1.07) + 0.5 * (fat[1] - 19.0 * body_scale)
    depth_post = 100.0 * body_scale * u(0.95, 1.05)
    width_profile = tuple(f + u(-0.015, 0.015) for f in (1.04, 1.02, 1.0, 0.97, 1.01, 1.03))
    belly_profile = tuple(f + u(-0.03, 0.03) for f in (0.94, 0.97, 1.0, 1.02, 0.96, 0.9))
    muscle = (u(10.0, 15.0), u(8.0, 12.0), u(12.0, 16.0))
    table_y = u(115.0, 128.0)
    table_curvature = u(1.0e-4, 2.5e-4)
    back_y = table_y - _table_gap(
        half_width * max(width_profile), depth_post, table_curvature, u(6.0, 10.0)
    )
    return Body(
        scale=body_scale,
        organ_scale=body_scale**0.5,
        center_x=center_x,
        half_width=half_width,
        depth_ant=depth_ant,
        depth_post=depth_post,
        width_profile=width_profile,
        belly_profile=belly_profile,
        fat=fat,
        muscle=muscle,
        table_y=table_y,
        table_curvature=table_curvature,
        back_y=back_y,
    )


def draw_skeleton(d: Draw, body: Body) -> Skeleton:
    """Draw the spine, the diaphragm dome heights, the ribs and the iliac crest."""
    u = d.u
    vb_half = (u(19.0, 23.0) * d.organ_scale, u(14.0, 17.0) * d.organ_scale)
    vb_y = body.back_y - body.fat[2] - u(62.0, 70.0) * body.scale
    pitch = u(30.0, 35.0) * d.organ_scale
    dome_r = u(25.0, 45.0)
    dome_l = dome_r + u(8.0, 18.0)
    l1_top = dome_r + u(95.0, 115.0)
    ribs = _draw_ribs(d.rng, l1_top)
    iliac_crest = l1_top + 3.5 * pitch + u(-8.0, 8.0)
    return Skeleton(vb_half, vb_y, pitch, dome_r, dome_l, l1_top, ribs, iliac_crest)


def diaphragm_domes(body: Body, skeleton: Skeleton) -> tuple[Vec3, Vec3]:
    """Apices ``(x, y, z)`` of the right and left diaphragm domes."""
    return (
        (body.center_x - 0.42 * body.cav_a, body.yc - 0.1 * body.cav_ant, skeleton.dome_r),
        (body.center_x + 0.42 * body.cav_a, body.yc - 0.1 * body.cav_ant, skeleton.dome_l),
    )


def _table_gap(half_width: float, depth_post: float, curvature: float, gap: float) -> float:
    """Distance from the table top (midline) to the back such that the air gap is ``>= gap``.

    The table top rises towards its edges; the back curves up as a superellipse.
    """
    x = np.linspace(-half_width, half_width, 401)
    body_rise = depth_post * (
        1.0 - np.clip(1.0 - np.abs(x / half_width) ** P_POST, 0, 1) ** (1.0 / P_POST)
    )
    table_rise = curvature * x**2
    return gap + max(0.0, float((table_rise - body_rise).max()))


def _draw_ribs(rng: np.random.Generator, l1_top: float) -> tuple[Vec3, ...]:
    """Ribs 12 up to the chest: ``(z at the spine, descent per radian, first angle)``."""
    ribs = []
    z = l1_top - rng.uniform(10.0, 20.0)
    for i in range(10):
        first_angle = (2.0, 1.5, 1.0)[i] if i < 3 else float(rng.uniform(0.45, 0.65))
        ribs.append((float(z), float(rng.uniform(32.0, 42.0)), first_angle))
        z -= rng.uniform(21.0, 25.0)
    return tuple(ribs)
