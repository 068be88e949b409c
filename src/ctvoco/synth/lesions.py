"""Lesion kinds of the synthetic injuries and how each is painted into a canvas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np

from ctvoco.synth.anatomy import Anatomy
from ctvoco.synth.canvas import Canvas, ellipsoid_box
from ctvoco.synth.regions import below_diaphragm, halfwidth, in_cavity, organ_radius
from ctvoco.synth.shapes import Ellipsoid, Lobe, Tube, ellipsoid_s
from ctvoco.synth.tissues import KIDNEY_L, KIDNEY_R, LIVER, SPLEEN


@dataclass(frozen=True, eq=False)
class Cleft:
    """A laceration: a thin jagged wedge, widest at the organ surface (``u = +half``)."""

    organs: tuple[int, ...]
    target: int
    center: np.ndarray
    basis: np.ndarray  # rows: length (outward), thin, height directions
    length: float
    half_width: float
    half_height: float
    wobble: tuple[float, float, float]  # amplitude mm, frequency rad/mm, phase
    hu: float


@dataclass(frozen=True, eq=False)
class Shatter:
    """A large irregular hypodense region of an organ with a mottled texture."""

    organs: tuple[int, ...]
    target: int
    center: np.ndarray
    radius: float
    lobes: tuple[Lobe, ...]
    texture: tuple[tuple[float, float, float, float, float], ...]  # nx, ny, nz, freq, phase
    hu: float


@dataclass(frozen=True, eq=False)
class Hematoma:
    """A crescent around part of an organ: a subcapsular rim inside, a collection outside."""

    organ: str
    organs: tuple[int, ...]
    target: int
    center: np.ndarray
    radius: float
    scale: float  # mm per unit of the organ's normalised radius (its smallest half axis)
    thickness: float  # mm
    hu: float


@dataclass(frozen=True, eq=False)
class Blob:
    """A lobulated blob painted over the host codes (or only over fat in the cavity)."""

    shape: Ellipsoid
    target: int
    hu: float
    hosts: tuple[int, ...]
    fat_only: bool = False


@dataclass(frozen=True, eq=False)
class BowelInjury:
    loop: int
    thick_loop: Tube
    window: tuple[int, int]


@dataclass(frozen=True, eq=False)
class InjuryPlan:
    """The lesions of a patient, its bowel injury and the AAST grade of each injured organ."""

    lesions: tuple[Cleft | Shatter | Hematoma | Blob, ...]
    bowel: BowelInjury | None
    grades: dict[str, int] = field(default_factory=dict)


ORGAN_TARGET_CODES: Final[dict[str, tuple[int, ...]]] = {
    "liver": (LIVER,),
    "spleen": (SPLEEN,),
    "kidney_right": (KIDNEY_R,),
    "kidney_left": (KIDNEY_L,),
}


def _paint_cleft(canvas: Canvas, c: Cleft) -> None:
    """Paint a laceration into the parenchyma of its organ."""
    ext = max(0.5 * c.length, c.half_width + c.wobble[0], c.half_height) + 2.0
    box = canvas.grid.box(c.center - ext, c.center + ext)
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    cx, cy, cz = c.center.tolist()
    dx, dy, dz = x - cx, y - cy, z - cz
    u, v, w = (b[0] * dx + b[1] * dy + b[2] * dz for b in c.basis.tolist())
    t = u * (2.0 / c.length)  # -1 deep end, +1 surface end
    amp, freq, phase = c.wobble
    width = c.half_width * (0.7 + 0.15 * (t + 1.0))
    height = c.half_height * np.sqrt(np.clip(1.0 - 0.64 * t * t, 0.0, None))
    mask = (np.abs(t) <= 1.0) & (np.abs(v - amp * np.sin(freq * u + phase)) <= width)
    mask &= np.abs(w) <= height
    parenchyma = (canvas.hu[box] > 60.0) | (canvas.injuries[box] == c.target)
    mask &= np.isin(canvas.organs[box], c.organs) & parenchyma
    canvas.paint(box, mask, c.hu, injury=c.target)


def _paint_shatter(canvas: Canvas, sh: Shatter) -> None:
    """Paint a shattered, mottled hypodense region into its organ."""
    ext = sh.radius * (1.0 + sum(abs(lobe[5]) for lobe in sh.lobes)) + 1.0
    box = canvas.grid.box(sh.center - ext, sh.center + ext)
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    shape = Ellipsoid(tuple(sh.center), (sh.radius,) * 3, lobes=sh.lobes)
    mask = (ellipsoid_s(shape, x, y, z) <= 1.0) & np.isin(canvas.organs[box], sh.organs)
    cx, cy, cz = sh.center.tolist()
    dx, dy, dz = x - cx, y - cy, z - cz
    hu = np.full(mask.shape, sh.hu, dtype=np.float32)
    for nx, ny, nz, freq, phase in sh.texture:
        hu += 7.0 * np.cos(freq * (nx * dx + ny * dy + nz * dz) + phase)
    canvas.paint(box, mask, hu, injury=sh.target)


def _paint_hematoma(canvas: Canvas, anat: Anatomy, h: Hematoma) -> None:
    """Paint a hematoma crescent: subcapsular rim inside, collection in the fat outside."""
    ext = h.radius + h.thickness + 2.0
    box = canvas.grid.box(h.center - ext, h.center + ext)
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    cx, cy, cz = h.center.tolist()
    d2 = ((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) * (1.0 / h.radius**2)
    thickness = h.thickness * np.sqrt(np.clip(1.0 - d2, 0.0, None))  # crescent: thick centre
    s = organ_radius(anat, h.organ, x, y, z)
    scale = h.scale
    organ_box = np.isin(canvas.organs[box], h.organs)
    wall_gap = halfwidth(anat, y, z, "cavity") - np.abs(x - anat.center_x)
    rim = organ_box & ((s > 1.0 - 0.5 * thickness / scale) | (wall_gap < 0.5 * thickness))
    outside = canvas.fat(box) & (s > 1.0) & (s < 1.0 + thickness / scale)
    outside &= (wall_gap > 0) & below_diaphragm(anat, x, y, z)
    canvas.paint(box, (rim | outside) & (thickness > 0), h.hu, injury=h.target)


def _paint_blob(canvas: Canvas, anat: Anatomy, b: Blob) -> None:
    """Paint a blob over its host codes (or over peritoneal fat only)."""
    box, (x, y, z) = ellipsoid_box(canvas, b.shape)
    if box is None:
        return
    mask = ellipsoid_s(b.shape, x, y, z) <= 1.0
    if b.fat_only:
        mask &= canvas.fat(box) & in_cavity(anat, x, y, z)
    else:
        mask &= np.isin(canvas.organs[box], b.hosts)
    canvas.paint(box, mask, b.hu, injury=b.target)


def paint_lesions(canvas: Canvas, anat: Anatomy, plan: InjuryPlan) -> None:
    """Paint every planned lesion, in plan order."""
    for lesion in plan.lesions:
        if isinstance(lesion, Cleft):
            _paint_cleft(canvas, lesion)
        elif isinstance(lesion, Shatter):
            _paint_shatter(canvas, lesion)
        elif isinstance(lesion, Hematoma):
            _paint_hematoma(canvas, anat, lesion)
        else:
            _paint_blob(canvas, anat, lesion)
