"""A synthetic abdominal CT phantom with RSNA-style injury labels.

Real RSNA 2023 and FLARE data need accounts, so tests, the demo and the label-efficiency
study run on synthetic patients. A patient is two objects:

* :class:`Anatomy` — every per-patient parameter (body size, fat and muscle thickness,
  organ ellipsoids, vessel and bowel paths, vertebra size, table height, contrast-phase HU).
  It is drawn by :func:`draw_anatomy`.
* :class:`InjuryLabels` — the five RSNA targets, drawn by :func:`draw_injury_labels`.

:func:`render_volume` turns both into a CT volume in Hounsfield units.

Design:

* **Geometry in millimetres.** Every structure is a function of scanner coordinates
  ``(x, y, z)`` in mm: ``x`` grows towards the patient's LEFT, ``y`` towards POSTERIOR,
  ``z`` towards CAUDAL (feet). In-plane, ``x = y = 0`` is the scanner isocentre, which is the
  centre of the reconstructed field of view; ``z = 0`` is the top of the default field of
  view (a few centimetres above the liver dome). The same anatomy therefore renders
  consistently at any shape and spacing, and ``z_offset_mm`` shifts the field of view along
  the patient (a second series of the same patient).
* **Canonical orientation.** A volume is ``(D, H, W)`` = (slices, rows, columns); slice 0 is
  the most cranial slice, row 0 is anterior, column 0 is the patient's right (radiological
  display). Voxel ``(k, i, j)`` has its centre at ``z = z_offset_mm + (k + 0.5) * dz``,
  ``y = (i + 0.5 - H / 2) * dy``, ``x = (j + 0.5 - W / 2) * dx``.
* **Painting.** The volume starts as air; structures are painted in anatomical order
  (body layers, thorax, muscles, gut, solid organs, vessels, bones, injuries), each inside
  its own bounding box so that rendering stays fast at 512 x 512. A slight Gaussian blur
  (partial volume) and Gaussian noise finish the image.
* **Injuries are consistent with the labels.** Injury geometry comes from a generator seeded
  by the anatomy's seed and the target, so a patient's two series, or renders of the same
  anatomy with and without an injury, differ only by the lesion. Liver, spleen and kidney
  lesions share HU and shape distributions: only where they are tells them apart.

Label maps returned with every volume:

* ``organs`` (:data:`ORGAN_CODES`): 0 outside (air), 1 other soft tissue (fat, muscle, skin,
  heart, IVC, gallbladder, bladder, discs, spinal canal), 2 bone, 3 aorta and common iliac
  arteries, 4 liver (with its vessels), 5 spleen, 6 right kidney, 7 left kidney (with renal
  sinus and pelvis), 8 bowel (stomach, small bowel, colon: wall and content), 9 lung,
  10 CT table.
* ``injuries`` (:data:`INJURY_CODES`): 0 none, else ``1 + TARGETS.index(target)`` — 1 bowel
  (thickened wall, free fluid, extraluminal gas), 2 extravasation (contrast blush and its
  hematoma), 3 kidney, 4 liver, 5 spleen (laceration, shattered parenchyma, hematoma).
  Organ codes are unchanged under injuries, so ``organs`` is the uninjured segmentation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage

from ctvoco.schema import TARGET_CLASSES, TARGETS, target_columns

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

Vec3 = tuple[float, float, float]
"""A point or size ``(x, y, z)`` in millimetres (scanner frame, see the module docstring)."""

DEFAULT_SHAPE: Final[tuple[int, int, int]] = (64, 160, 160)
"""Default ``(D, H, W)``: small enough for tests, 320 x 352 x 352 mm."""

DEFAULT_SPACING: Final[Vec3] = (5.0, 2.2, 2.2)
"""Default voxel spacing ``(dz, dy, dx)`` in millimetres."""

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

INJURY_CODES: Final[dict[str, int]] = {target: i + 1 for i, target in enumerate(TARGETS)}
"""Codes of the ``injuries`` label map: ``1 + TARGETS.index(target)``; 0 is no injury."""

DEFAULT_PREVALENCE: Final[dict[str, tuple[float, ...]]] = {
    "bowel": (0.75, 0.25),
    "extravasation": (0.75, 0.25),
    "kidney": (0.6, 0.2, 0.2),
    "liver": (0.6, 0.2, 0.2),
    "spleen": (0.6, 0.2, 0.2),
}
"""Class probabilities per target for a synthetic cohort, in ``TARGET_CLASSES`` order.

Far above RSNA's real prevalence (bowel 2%, extravasation 6%, kidney 3.7/2.1%, liver 8/2%,
spleen 6/5%) so that a cohort of a few dozen patients has positives to learn from.
"""

_OUTSIDE, _SOFT, _BONE, _AORTA, _LIVER, _SPLEEN, _KIDNEY_R, _KIDNEY_L, _BOWEL, _LUNG, _TABLE = (
    range(11)
)

# Fixed HU values; per-patient (contrast-phase) values live in Anatomy.
_AIR_HU: Final = -1000.0
_LUNG_HU: Final = -860.0
_SKIN_HU: Final = 20.0
_TABLE_SHELL_HU: Final = 90.0
_TABLE_CORE_HU: Final = -40.0
_CORTICAL_HU: Final = 700.0
_CANCELLOUS_HU: Final = 250.0
_BONE_PLATE_HU: Final = 480.0
_DISC_HU: Final = 90.0
_CSF_HU: Final = 15.0
_BOWEL_WALL_HU: Final = 60.0
_THICK_WALL_HU: Final = 80.0
_FLUID_HU: Final = 10.0
_STOOL_HU: Final = 25.0
_SINUS_FAT_HU: Final = -80.0

_P_POST: Final = 3.0
"""Superellipse exponent of the posterior half of the body section (a flat back)."""

_PROFILE_Z: Final[tuple[float, ...]] = (-100.0, 50.0, 150.0, 250.0, 350.0, 500.0)
"""Knots (mm) of the craniocaudal body-shape profiles."""

_DOME_CURVATURE: Final = (0.0065, 0.003, 0.009)
"""Curvature of each diaphragm dome (lateral, anterior, posterior), mm per mm^2 from its apex.

The lung bases reach deepest posteriorly (the costophrenic recesses)."""

_DOME_DEPTH: Final = 95.0
"""Deepest point of the posterior costophrenic recess below a dome apex, mm."""

_DIAPHRAGM_MM: Final = 5.0
"""Thickness of the diaphragm muscle below the lung bases, mm."""

_BLUR_SIGMA_VOXELS: Final = (0.35, 0.5, 0.5)
"""Partial-volume blur ``(z, y, x)`` in voxels."""

Lobe = tuple[float, float, float, float, float, float]
"""A surface lobulation term ``(nx, ny, nz, frequency, phase, amplitude)`` of an ellipsoid."""


# --------------------------------------------------------------------------------------
# Labels


@dataclass(frozen=True)
class InjuryLabels:
    """The five RSNA targets of one patient.

    Attributes:
        bowel: 0 healthy, 1 injury.
        extravasation: 0 healthy, 1 injury.
        kidney: 0 healthy, 1 low grade, 2 high grade.
        liver: 0 healthy, 1 low grade, 2 high grade.
        spleen: 0 healthy, 1 low grade, 2 high grade.
    """

    bowel: int = 0
    extravasation: int = 0
    kidney: int = 0
    liver: int = 0
    spleen: int = 0

    def __post_init__(self) -> None:
        for target in TARGETS:
            value = getattr(self, target)
            n_classes = len(TARGET_CLASSES[target])
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{target} must be an int; got {type(value).__name__}")
            if not 0 <= int(value) < n_classes:
                raise ValueError(f"{target} must be in [0, {n_classes - 1}]; got {value}")
            object.__setattr__(self, target, int(value))

    @classmethod
    def from_classes(cls, classes: Sequence[int]) -> InjuryLabels:
        """Labels from class indices in ``schema.TARGETS`` order."""
        if len(classes) != len(TARGETS):
            raise ValueError(f"expected {len(TARGETS)} class indices; got {len(classes)}")
        return cls(**dict(zip(TARGETS, classes, strict=True)))

    @classmethod
    def from_row(cls, row: Mapping[str, int]) -> InjuryLabels:
        """Labels from a ``train.csv``-style row of one-hot columns."""
        classes = []
        for target in TARGETS:
            hot = [int(row[column]) for column in target_columns(target)]
            if sorted(hot) != [0] * (len(hot) - 1) + [1]:
                raise ValueError(f"{target} columns are not one-hot: {hot}")
            classes.append(hot.index(1))
        return cls.from_classes(classes)

    @property
    def any_injury(self) -> bool:
        """Whether any target is not healthy."""
        return any(self.as_classes())

    def as_classes(self) -> tuple[int, ...]:
        """Class indices in ``schema.TARGETS`` order."""
        return tuple(getattr(self, target) for target in TARGETS)

    def to_row(self) -> dict[str, int]:
        """The 13 one-hot columns and ``any_injury``, named and ordered as in ``train.csv``."""
        row: dict[str, int] = {}
        for target, cls_index in zip(TARGETS, self.as_classes(), strict=True):
            for i, column in enumerate(target_columns(target)):
                row[column] = int(i == cls_index)
        row["any_injury"] = int(self.any_injury)
        return row


def draw_injury_labels(
    rng: np.random.Generator,
    prevalence: Mapping[str, Sequence[float]] = DEFAULT_PREVALENCE,
) -> InjuryLabels:
    """Draw the five targets independently.

    Args:
        rng: Random generator.
        prevalence: Class probabilities per target, in ``schema.TARGET_CLASSES`` order.

    Returns:
        The drawn labels.

    Raises:
        ValueError: If a target is missing or its probabilities are invalid.
    """
    _check_prevalence(prevalence)
    return InjuryLabels(
        **{t: int(rng.choice(len(prevalence[t]), p=np.asarray(prevalence[t]))) for t in TARGETS}
    )


def _check_prevalence(prevalence: Mapping[str, Sequence[float]]) -> None:
    """Raise ValueError unless every target has valid class probabilities."""
    unknown = set(prevalence) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown targets in prevalence: {sorted(unknown)}")
    for target in TARGETS:
        if target not in prevalence:
            raise ValueError(f"prevalence lacks target {target!r}")
        p = np.asarray(prevalence[target], dtype=float)
        n_classes = len(TARGET_CLASSES[target])
        if p.shape != (n_classes,) or (p < 0).any() or not math.isclose(p.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(
                f"prevalence[{target!r}] must be {n_classes} non-negative probabilities "
                f"summing to 1; got {prevalence[target]}"
            )


# --------------------------------------------------------------------------------------
# Anatomy


@dataclass(frozen=True)
class Ellipsoid:
    """A rotated, optionally lobulated ellipsoid.

    A point ``p`` has local coordinates ``q = R.T @ (p - center)`` with
    ``R = Rz(az) @ Ry(ay) @ Rx(ax)``; it is inside when ``|q / half_axes| <= 1 + lobulation``.

    Attributes:
        center: ``(x, y, z)`` mm.
        half_axes: Half-lengths along the local axes, mm.
        angles: ``(az, ay, ax)`` rotation angles in degrees.
        lobes: Surface lobulation terms; each adds ``amp * cos(freq * (u . n) + phase)`` to the
            radius, ``u`` the normalised local position.
    """

    center: Vec3
    half_axes: Vec3
    angles: Vec3 = (0.0, 0.0, 0.0)
    lobes: tuple[Lobe, ...] = ()

    def __post_init__(self) -> None:
        for name in ("center", "half_axes", "angles"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be 3 finite numbers; got {getattr(self, name)}")
            object.__setattr__(self, name, values)
        if min(self.half_axes) <= 0:
            raise ValueError(f"half_axes must be positive; got {self.half_axes}")
        object.__setattr__(
            self, "lobes", tuple(tuple(float(v) for v in lobe) for lobe in self.lobes)
        )

    @property
    def rotation(self) -> np.ndarray:
        """The ``(3, 3)`` rotation matrix ``R`` (columns: local axes in scanner coordinates)."""
        return _rotation(*self.angles)

    def point(self, local: Sequence[float]) -> np.ndarray:
        """Scanner coordinates ``(3,)`` of a point given in units of the half axes."""
        q = np.asarray(local, dtype=float) * np.asarray(self.half_axes)
        return np.asarray(self.center) + self.rotation @ q

    def extent(self) -> np.ndarray:
        """Half-size ``(3,)`` of the axis-aligned bounding box, mm."""
        r = self.rotation * np.asarray(self.half_axes)[None, :]
        bulge = 1.0 + sum(abs(lobe[5]) for lobe in self.lobes)
        return np.sqrt((r**2).sum(axis=1)) * bulge


@dataclass(frozen=True, eq=False)
class Tube:
    """A tube swept along a polyline, e.g. a bowel loop or a vessel.

    Attributes:
        points: ``(N, 3)`` centreline vertices ``(x, y, z)``, mm.
        radius: ``(N,)`` outer radius at each vertex, mm.
        wall: ``(N,)`` wall thickness, mm (0 for a vessel).
        gas: ``(N,)`` gas level in ``[-1, 1]``: lumen voxels more than ``gas * r_lumen`` anterior
            of the centreline are gas (1: none, -1: all gas; the patient lies supine).
    """

    points: np.ndarray
    radius: np.ndarray
    wall: np.ndarray
    gas: np.ndarray

    def __post_init__(self) -> None:
        points = np.array(self.points, dtype=float)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) < 2:
            raise ValueError(f"points must be (N >= 2, 3); got {points.shape}")
        object.__setattr__(self, "points", points)
        for name in ("radius", "wall", "gas"):
            values = np.broadcast_to(np.asarray(getattr(self, name), dtype=float), len(points))
            values = values.copy()
            values.flags.writeable = False
            object.__setattr__(self, name, values)
        points.flags.writeable = False

    @classmethod
    def vessel(cls, points: np.ndarray, radius: float | np.ndarray) -> Tube:
        """A solid tube (no wall, no gas)."""
        n = len(points)
        return cls(points, np.broadcast_to(radius, n), np.zeros(n), np.ones(n))


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Per-patient parameters, in mm in the scanner frame (see the module docstring).

    Attributes:
        seed: Seeds the patient's injury geometry, so every render of this patient places
            its lesions identically.
        center_x: Body midline ``x``.
        back_y: Posterior skin surface ``y`` (the flat back).
        body_half_width: Half width of the body at the reference level.
        body_half_depth_anterior: Midline-to-anterior-skin depth at the reference level.
        body_half_depth_posterior: Midline-to-back depth.
        width_profile: Width factors at ``_PROFILE_Z`` (lower chest to pelvis).
        belly_profile: Anterior depth factors at ``_PROFILE_Z``.
        fat_thickness: Subcutaneous fat ``(lateral, anterior, posterior)``.
        muscle_thickness: Abdominal wall muscle ``(lateral, anterior, posterior)``.
        table_y: Top surface of the CT table at the midline.
        table_curvature: The table top rises by ``curvature * x**2`` towards its edges.
        diaphragm_domes: Apices ``(x, y, z)`` of the right and left diaphragm domes.
        heart: Heart (above the diaphragm).
        liver: Right and left lobe.
        gallbladder: Gallbladder, or None (cholecystectomy / contracted).
        spleen: Spleen.
        spleen_hilum: Carved out of the spleen's medial side (makes it concave).
        kidneys: Right and left kidney; local ``+x`` points to the hilum.
        stomach: Stomach.
        bladder: Urinary bladder.
        aorta: Descending aorta to its bifurcation.
        iliac_arteries: Right and left common/external iliac arteries.
        ivc: Inferior vena cava.
        liver_vessels: Portal and hepatic veins (painted inside the liver only).
        colon: Colon from caecum to rectum.
        small_bowel: Small bowel loops.
        vertebra_xy: Centre ``(x, y)`` of the lumbar vertebral bodies.
        vertebra_half_axes: Half width and half depth of a lumbar vertebral body.
        vertebra_pitch: Craniocaudal distance between vertebrae (body + disc).
        l1_top_z: Top of the first lumbar vertebral body.
        ribs: ``(z at the spine, descent per radian, first angle reached)`` per rib; the angle
            is measured from anterior (0) to posterior (pi).
        iliac_crest_z: Top of the iliac wings.
        fat_hu: Fat.
        muscle_hu: Muscle.
        liver_hu: Liver parenchyma.
        spleen_hu: Spleen parenchyma.
        kidney_cortex_hu: Renal cortex.
        kidney_medulla_hu: Renal medulla.
        aorta_hu: Aortic blood (contrast phase; RSNA's ``aortic_hu``).
        portal_hu: Portal and hepatic veins.
        ivc_hu: Inferior vena cava and heart blood pool.
    """

    seed: int
    center_x: float
    back_y: float
    body_half_width: float
    body_half_depth_anterior: float
    body_half_depth_posterior: float
    width_profile: tuple[float, ...]
    belly_profile: tuple[float, ...]
    fat_thickness: Vec3
    muscle_thickness: Vec3
    table_y: float
    table_curvature: float
    diaphragm_domes: tuple[Vec3, Vec3]
    heart: Ellipsoid
    liver: tuple[Ellipsoid, Ellipsoid]
    gallbladder: Ellipsoid | None
    spleen: Ellipsoid
    spleen_hilum: Ellipsoid
    kidneys: tuple[Ellipsoid, Ellipsoid]
    stomach: Ellipsoid
    bladder: Ellipsoid
    aorta: Tube
    iliac_arteries: tuple[Tube, Tube]
    ivc: Tube
    liver_vessels: tuple[Tube, ...]
    colon: Tube
    small_bowel: tuple[Tube, ...]
    vertebra_xy: tuple[float, float]
    vertebra_half_axes: tuple[float, float]
    vertebra_pitch: float
    l1_top_z: float
    ribs: tuple[Vec3, ...]
    iliac_crest_z: float
    fat_hu: float
    muscle_hu: float
    liver_hu: float
    spleen_hu: float
    kidney_cortex_hu: float
    kidney_medulla_hu: float
    aorta_hu: float
    portal_hu: float
    ivc_hu: float

    @property
    def s1_top_z(self) -> float:
        """Top of the sacrum (five lumbar vertebrae below L1)."""
        return self.l1_top_z + 5.0 * self.vertebra_pitch


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy.

    Body size varies by about +-15%, organ sizes by +-15% and organ positions by about
    +-10 mm, on top of correlated changes (a larger body has larger organs further apart).

    Args:
        rng: Random generator.

    Returns:
        The anatomy (all lengths in mm, scanner frame).
    """

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    def jitter(mm: float = 10.0) -> np.ndarray:
        return rng.uniform(-mm, mm, size=3)

    def size(*half_axes: float) -> Vec3:
        scale = u(0.85, 1.15) * organ_scale
        return (half_axes[0] * scale, half_axes[1] * scale, half_axes[2] * scale)

    seed = int(rng.integers(2**31 - 1))
    body_scale = u(0.87, 1.13)
    organ_scale = body_scale**0.5
    center_x = u(-8.0, 8.0)
    half_width = 140.0 * body_scale * u(0.95, 1.05)
    depth_ant = 110.0 * body_scale * u(0.93, 1.07)
    depth_post = 100.0 * body_scale * u(0.95, 1.05)
    width_profile = tuple(f + u(-0.015, 0.015) for f in (1.04, 1.02, 1.0, 0.97, 1.01, 1.03))
    belly_profile = tuple(f + u(-0.03, 0.03) for f in (0.94, 0.97, 1.0, 1.02, 0.96, 0.9))
    fat = (u(8.0, 28.0) * body_scale, u(10.0, 32.0) * body_scale, u(8.0, 22.0) * body_scale)
    muscle = (u(10.0, 15.0), u(8.0, 12.0), u(12.0, 16.0))
    table_y = u(115.0, 128.0)
    table_curvature = u(1.0e-4, 2.5e-4)
    back_y = table_y - _table_gap(
        half_width * max(width_profile), depth_post, table_curvature, u(6.0, 10.0)
    )

    # Reference frame of the abdominal cavity at the kidney level.
    yc = back_y - depth_post
    cav_a = half_width - fat[0] - muscle[0]
    cav_ant = depth_ant - fat[1] - muscle[1]
    cav_post = depth_post - fat[2] - muscle[2]

    # Skeleton.
    vb_half = (u(19.0, 23.0) * organ_scale, u(14.0, 17.0) * organ_scale)
    vb_y = back_y - fat[2] - u(62.0, 70.0) * body_scale
    vertebra_xy = (center_x, vb_y)
    pitch = u(30.0, 35.0) * organ_scale
    dome_r = u(25.0, 45.0)
    dome_l = dome_r + u(8.0, 18.0)
    l1_top = dome_r + u(95.0, 115.0)
    s1_top = l1_top + 5 * pitch
    ribs = _draw_ribs(rng, l1_top)
    iliac_crest = l1_top + 3.5 * pitch + u(-8.0, 8.0)

    domes = (
        (center_x - 0.42 * cav_a, yc - 0.1 * cav_ant, dome_r),
        (center_x + 0.42 * cav_a, yc - 0.1 * cav_ant, dome_l),
    )
    heart = Ellipsoid(
        tuple(
            np.array([center_x + 15.0, yc - 0.35 * cav_ant, min(dome_r, dome_l) - 45.0])
            + jitter(8.0)
        ),
        size(65.0, 50.0, 55.0),
        (u(-20.0, 0.0), 0.0, 0.0),
    )

    # Solid organs.
    liver_r = Ellipsoid(
        tuple(np.array([center_x - 0.5 * cav_a, yc + 0.05 * cav_post, dome_r + 70.0]) + jitter()),
        size(68.0, 85.0, 78.0),
        (u(-10.0, 10.0), u(-8.0, 8.0), u(-8.0, 8.0)),
        _draw_lobes(rng, 3, 0.05),
    )
    liver_l = Ellipsoid(
        tuple(np.array([center_x + 0.12 * cav_a, yc - 0.55 * cav_ant, dome_r + 42.0]) + jitter()),
        size(58.0, 32.0, 40.0),
        (u(-20.0, 0.0), 0.0, u(-10.0, 10.0)),
        _draw_lobes(rng, 2, 0.05),
    )
    gallbladder = None
    if rng.random() < 0.8:
        gallbladder = Ellipsoid(
            tuple(
                np.array([center_x - 0.3 * cav_a, yc - 0.45 * cav_ant, dome_r + 112.0])
                + jitter(6.0)
            ),
            size(14.0, 17.0, 32.0),
            (u(-30.0, 30.0), u(-15.0, 15.0), u(-25.0, 5.0)),
        )
    spleen = Ellipsoid(
        tuple(np.array([center_x + 0.64 * cav_a, yc + 0.45 * cav_post, dome_l + 58.0]) + jitter()),
        size(24.0, 55.0, 48.0),
        (u(25.0, 40.0), u(-10.0, 10.0), u(-15.0, 5.0)),
        _draw_lobes(rng, 2, 0.05),
    )
    spleen_hilum = Ellipsoid(
        tuple(spleen.point((-1.35, 0.0, 0.0))),
        (spleen.half_axes[0] * 0.75, spleen.half_axes[1] * 0.6, spleen.half_axes[2] * 0.7),
        spleen.angles,
    )

    def kidney(side: float, kidney_z: float, yaw: float) -> Ellipsoid:
        # Local +x (the hilum) faces anteromedially; the upper pole tilts medially.
        return Ellipsoid(
            (
                center_x + side * (vb_half[0] + u(40.0, 48.0)) + u(-5.0, 5.0),
                vb_y + u(-5.0, 13.0),
                kidney_z,
            ),
            size(27.0, 22.0, 55.0),
            (yaw, u(-15.0, -5.0), 0.0),
        )

    kidney_z_left = l1_top + u(25.0, 40.0)
    kidney_z_right = kidney_z_left + u(8.0, 20.0)  # the liver pushes the right kidney down
    kidneys = (
        kidney(-1.0, kidney_z_right, u(-38.0, -22.0)),
        kidney(1.0, kidney_z_left, 180.0 + u(22.0, 38.0)),
    )
    stomach = Ellipsoid(
        tuple(np.array([center_x + 0.4 * cav_a, yc - 0.2 * cav_ant, dome_l + 55.0]) + jitter()),
        size(38.0, 36.0, 55.0),
        (u(20.0, 40.0), 0.0, u(-20.0, 0.0)),
        _draw_lobes(rng, 2, 0.04),
    )
    bladder = Ellipsoid(
        tuple(np.array([center_x, yc - 0.35 * cav_ant, s1_top + 80.0]) + jitter(6.0)),
        tuple(float(v) * u(0.6, 1.2) for v in (45.0, 35.0, 35.0)),
    )

    # Vessels.
    aorta_radius = u(9.5, 12.5) * organ_scale
    aorta_x = center_x + u(8.0, 15.0)
    aorta_y = vb_y - vb_half[1] - aorta_radius - u(1.0, 4.0)
    bifurcation_z = l1_top + 3.3 * pitch
    aorta = Tube.vessel(
        np.array(
            [
                [center_x + 24.0, vb_y - 2.0, -250.0],
                [center_x + 22.0, vb_y - 4.0, min(dome_r, dome_l) - 10.0],
                [aorta_x, aorta_y, dome_r + 60.0],
                [aorta_x, aorta_y, bifurcation_z],
            ]
        ),
        np.array([aorta_radius, aorta_radius, aorta_radius, 0.9 * aorta_radius]),
    )
    iliac_arteries = tuple(
        Tube.vessel(
            np.array(
                [
                    [aorta_x, aorta_y, bifurcation_z - 5.0],
                    [center_x + side * 35.0, aorta_y + 5.0, bifurcation_z + 55.0],
                    [center_x + side * 65.0, aorta_y - 5.0, bifurcation_z + 130.0],
                    [center_x + side * 80.0, aorta_y - 45.0, bifurcation_z + 230.0],
                ]
            ),
            0.55 * aorta_radius,
        )
        for side in (-1.0, 1.0)
    )
    ivc_x = center_x - u(18.0, 26.0)
    ivc_y = vb_y - vb_half[1] - u(9.0, 13.0)
    ivc = Tube.vessel(
        np.array(
            [
                [ivc_x, ivc_y - 8.0, -250.0],
                [ivc_x - 2.0, ivc_y - 6.0, dome_r + 20.0],
                [ivc_x, ivc_y, l1_top],
                [ivc_x, ivc_y, bifurcation_z + 10.0],
                [center_x - 35.0, ivc_y + 8.0, bifurcation_z + 70.0],
            ]
        ),
        u(9.0, 12.0),
    )
    liver_vessels = _draw_liver_vessels(rng, liver_r, liver_l, (ivc_x, ivc_y, dome_r + 25.0))

    # Gut.
    colon = _draw_colon(rng, center_x, yc, cav_a, cav_ant, cav_post, liver_r, spleen, s1_top, vb_y)
    obstacles = (liver_r, liver_l, spleen, stomach, bladder, *kidneys)
    small_bowel = _draw_small_bowel(
        rng, center_x, yc, cav_a, cav_ant, l1_top, s1_top, vb_y, obstacles, colon
    )

    # Contrast phase (portal venous, with some spread in timing).
    aorta_hu = u(150.0, 250.0)
    liver_hu = u(100.0, 120.0)
    return Anatomy(
        seed=seed,
        center_x=center_x,
        back_y=back_y,
        body_half_width=half_width,
        body_half_depth_anterior=depth_ant,
        body_half_depth_posterior=depth_post,
        width_profile=width_profile,
        belly_profile=belly_profile,
        fat_thickness=fat,
        muscle_thickness=muscle,
        table_y=table_y,
        table_curvature=table_curvature,
        diaphragm_domes=domes,
        heart=heart,
        liver=(liver_r, liver_l),
        gallbladder=gallbladder,
        spleen=spleen,
        spleen_hilum=spleen_hilum,
        kidneys=kidneys,
        stomach=stomach,
        bladder=bladder,
        aorta=aorta,
        iliac_arteries=iliac_arteries,
        ivc=ivc,
        liver_vessels=liver_vessels,
        colon=colon,
        small_bowel=small_bowel,
        vertebra_xy=vertebra_xy,
        vertebra_half_axes=vb_half,
        vertebra_pitch=pitch,
        l1_top_z=l1_top,
        ribs=ribs,
        iliac_crest_z=iliac_crest,
        fat_hu=u(-110.0, -90.0),
        muscle_hu=u(45.0, 58.0),
        liver_hu=liver_hu,
        spleen_hu=liver_hu + u(-4.0, 8.0),
        kidney_cortex_hu=u(170.0, 195.0),
        kidney_medulla_hu=u(110.0, 130.0),
        aorta_hu=aorta_hu,
        portal_hu=u(155.0, 185.0),
        ivc_hu=0.5 * aorta_hu + u(40.0, 60.0),
    )


def _table_gap(half_width: float, depth_post: float, curvature: float, gap: float) -> float:
    """Distance from the table top (midline) to the back such that the air gap is ``>= gap``.

    The table top rises towards its edges; the back curves up as a superellipse.
    """
    x = np.linspace(-half_width, half_width, 401)
    body_rise = depth_post * (
        1.0 - np.clip(1.0 - np.abs(x / half_width) ** _P_POST, 0, 1) ** (1.0 / _P_POST)
    )
    table_rise = curvature * x**2
    return gap + max(0.0, float((table_rise - body_rise).max()))


def _draw_lobes(rng: np.random.Generator, count: int, amplitude: float) -> tuple[Lobe, ...]:
    """Random surface lobulation terms of an ellipsoid (amplitudes up to ``amplitude``)."""
    lobes = []
    for _ in range(count):
        n = rng.normal(size=3)
        n /= np.linalg.norm(n)
        lobes.append(
            (
                float(n[0]),
                float(n[1]),
                float(n[2]),
                float(rng.uniform(2.0, 4.0)),
                float(rng.uniform(0, 2 * np.pi)),
                float(rng.uniform(0.5, 1.0) * amplitude),
            )
        )
    return tuple(lobes)


def _draw_ribs(rng: np.random.Generator, l1_top: float) -> tuple[Vec3, ...]:
    """Ribs 12 up to the chest: ``(z at the spine, descent per radian, first angle)``."""
    ribs = []
    z = l1_top - rng.uniform(10.0, 20.0)
    for i in range(10):
        first_angle = (2.0, 1.5, 1.0)[i] if i < 3 else float(rng.uniform(0.45, 0.65))
        ribs.append((float(z), float(rng.uniform(32.0, 42.0)), first_angle))
        z -= rng.uniform(21.0, 25.0)
    return tuple(ribs)


def _draw_liver_vessels(
    rng: np.random.Generator, right: Ellipsoid, left: Ellipsoid, ivc_top: Vec3
) -> tuple[Tube, ...]:
    """Portal branches from the hilum and hepatic veins towards the IVC, tapering."""
    hilum = right.point((0.55, -0.1, 0.3))
    vessels = []
    for i in range(7):
        lobe = left if i >= 5 else right
        end = lobe.point(_random_direction(rng) * rng.uniform(0.55, 0.85))
        mid = 0.5 * (hilum + end) + rng.normal(0.0, 6.0, 3)
        vessels.append(Tube.vessel(np.stack([hilum, mid, end]), np.array([4.5, 3.2, 1.8])))
    top = np.asarray(ivc_top)
    for _ in range(3):
        end = right.point(
            np.array([rng.uniform(-0.9, 0.4), rng.uniform(-0.9, -0.3), rng.uniform(-0.6, -0.2)])
        )
        mid = 0.5 * (top + end) + rng.normal(0.0, 5.0, 3)
        vessels.append(Tube.vessel(np.stack([top, mid, end]), np.array([5.0, 3.5, 2.0])))
    return tuple(vessels)


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random unit vector ``(3,)``."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _smooth_path(points: np.ndarray, step: float, sigma_mm: float) -> np.ndarray:
    """Resample a polyline every ``step`` mm and smooth it with a Gaussian along its length."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    fine = np.arange(0.0, s[-1] + 1e-9, step / 2.0)
    dense = np.stack([np.interp(fine, s, points[:, k]) for k in range(3)], axis=1)
    dense = ndimage.gaussian_filter1d(dense, sigma_mm / (step / 2.0), axis=0, mode="nearest")
    return dense[::2]


def _draw_colon(
    rng: np.random.Generator,
    cx: float,
    yc: float,
    cav_a: float,
    cav_ant: float,
    cav_post: float,
    liver: Ellipsoid,
    spleen: Ellipsoid,
    s1_top: float,
    vb_y: float,
) -> Tube:
    """Caecum, ascending, transverse, descending, sigmoid colon and rectum."""
    liver_bottom = liver.center[2] + 0.8 * liver.half_axes[2]
    spleen_bottom = spleen.center[2] + 0.9 * spleen.half_axes[2]
    a, ba, bp = cav_a, cav_ant, cav_post
    control = np.array(
        [
            [cx - 0.6 * a, yc - 0.2 * ba, s1_top - 5.0],
            [cx - 0.72 * a, yc - 0.1 * ba, s1_top - 55.0],
            [cx - 0.72 * a, yc - 0.15 * ba, liver_bottom + 15.0],
            [cx - 0.55 * a, yc - 0.45 * ba, liver_bottom + 5.0],
            [cx - 0.25 * a, yc - 0.72 * ba, liver_bottom + 22.0],
            [cx + 0.1 * a, yc - 0.72 * ba, liver_bottom + 32.0],
            [cx + 0.45 * a, yc - 0.55 * ba, spleen_bottom + 10.0],
            [cx + 0.7 * a, yc - 0.2 * ba, spleen_bottom - 5.0],
            [cx + 0.74 * a, yc - 0.05 * ba, spleen_bottom + 50.0],
            [cx + 0.72 * a, yc - 0.1 * ba, s1_top - 40.0],
            [cx + 0.45 * a, yc - 0.35 * ba, s1_top + 10.0],
            [cx + 0.12 * a, yc - 0.4 * ba, s1_top + 40.0],
            [cx - 0.05 * a, yc + 0.1 * bp, s1_top + 70.0],
            [cx, vb_y + 5.0, s1_top + 120.0],
        ]
    )
    control[1:-1] += rng.uniform(-10.0, 10.0, size=(len(control) - 2, 3))
    points = _smooth_path(control, 8.0, 10.0)
    n = len(points)
    radius = np.clip(rng.uniform(17.0, 22.0) + _smooth_noise(rng, n, 3.0, 4.0), 13.0, 26.0)
    gas = np.clip(rng.uniform(-0.5, 0.2) + _smooth_noise(rng, n, 0.5, 4.0), -1.0, 1.0)
    return Tube(points, radius, np.full(n, 3.0), gas)


def _smooth_noise(rng: np.random.Generator, n: int, amplitude: float, sigma: float) -> np.ndarray:
    """Smooth 1D noise of roughly the given amplitude, ``(n,)``."""
    noise = ndimage.gaussian_filter1d(rng.normal(size=n), sigma, mode="wrap")
    return amplitude * noise / max(float(noise.std()), 1e-6)


def _draw_small_bowel(
    rng: np.random.Generator,
    cx: float,
    yc: float,
    cav_a: float,
    cav_ant: float,
    l1_top: float,
    s1_top: float,
    vb_y: float,
    obstacles: Sequence[Ellipsoid],
    colon: Tube,
) -> tuple[Tube, ...]:
    """Small bowel loops as persistent random walks in the mid and lower abdomen."""
    center = np.array([cx, yc - 0.3 * cav_ant, 0.5 * (l1_top + 60.0 + s1_top + 30.0)])
    half = np.array([0.55 * cav_a, 0.5 * cav_ant, 0.5 * (s1_top + 30.0 - l1_top - 60.0)])

    def free(p: np.ndarray, radius: float) -> bool:
        if np.sum(((p - center) / half) ** 2) > 1.0:
            return False
        if abs(p[0] - cx) < 35.0 and p[1] > vb_y - 40.0:
            return False  # spine, aorta and IVC
        for e in obstacles:
            if _ellipsoid_s(e, *p) < 1.1:
                return False
        d = np.linalg.norm(colon.points - p, axis=1)
        return bool(d.min() > colon.radius[np.argmin(d)] + radius)

    loops = []
    step = 7.0
    for _ in range(int(rng.integers(4, 7))):
        radius = rng.uniform(10.0, 13.5)
        p = center + rng.uniform(-0.6, 0.6, 3) * half
        for _ in range(50):
            if free(p, radius):
                break
            p = center + rng.uniform(-0.7, 0.7, 3) * half
        direction = _random_direction(rng)
        path = [p]
        for _ in range(int(rng.integers(35, 56))):
            for attempt in range(10):
                trial = direction + rng.normal(0.0, 0.35 + 0.1 * attempt, 3)
                if attempt >= 3:
                    trial += (center - p) / max(np.linalg.norm(center - p), 1.0)
                trial /= np.linalg.norm(trial)
                if free(p + step * trial, radius):
                    break
            direction = trial
            p = p + step * direction
            path.append(p)
        points = _smooth_path(np.array(path), step, 5.0)
        n = len(points)
        gas = np.clip(rng.uniform(0.3, 1.1) + _smooth_noise(rng, n, 0.4, 5.0), -1.0, 1.0)
        loops.append(Tube(points, np.full(n, radius), np.full(n, 2.5), gas))
    return tuple(loops)


# --------------------------------------------------------------------------------------
# Geometry (vectorised over broadcastable coordinate arrays, mm)


def _rotation(az: float, ay: float, ax: float) -> np.ndarray:
    """``Rz(az) @ Ry(ay) @ Rx(ax)``, angles in degrees."""
    a, b, c = np.deg2rad([az, ay, ax])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def _local(e: Ellipsoid, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Local coordinates of points in units of the half axes (``|.| <= 1`` inside)."""
    r = e.rotation.tolist()  # Python floats keep float32 coordinates float32
    dx, dy, dz = x - e.center[0], y - e.center[1], z - e.center[2]
    return tuple(
        (r[0][k] * dx + r[1][k] * dy + r[2][k] * dz) * (1.0 / e.half_axes[k]) for k in range(3)
    )


def _ellipsoid_s(e: Ellipsoid, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Lobulated normalised radius: ``<= 1`` inside, ``1`` on the surface."""
    u, v, w = _local(e, x, y, z)
    s = np.sqrt(u * u + v * v + w * w)
    if not e.lobes:
        return s
    bulge = 1.0
    for nx, ny, nz, freq, phase, amp in e.lobes:
        bulge = bulge + amp * np.cos(freq * (u * nx + v * ny + w * nz) + phase)
    return s / bulge


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


def _halfwidth(anat: Anatomy, y: np.ndarray, z: np.ndarray, layer: str) -> np.ndarray:
    """Half width ``|x - center_x|`` of a body layer at ``(y, z)``; 0 outside the layer.

    Layers: ``skin`` (body outline), ``dermis``, ``fat`` (inner boundary of subcutaneous fat),
    ``cavity`` (inner boundary of the muscle wall).
    """
    il, ia, ip = _section_insets(anat, np.asarray(z, dtype=float), layer)
    a = anat.body_half_width * np.interp(z, _PROFILE_Z, anat.width_profile) - il
    ba = anat.body_half_depth_anterior * np.interp(z, _PROFILE_Z, anat.belly_profile) - ia
    bp = anat.body_half_depth_posterior - ip
    dy = y - (anat.back_y - anat.body_half_depth_posterior)
    anterior = np.sqrt(np.clip(1.0 - (dy / ba) ** 2, 0.0, None))
    posterior = np.clip(1.0 - np.abs(dy / bp) ** _P_POST, 0.0, None) ** (1.0 / _P_POST)
    return a * np.where(dy < 0, anterior, posterior)


def _in_cavity(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Whether points lie inside the abdominal/thoracic cavity (inside the muscle wall)."""
    return np.abs(x - anat.center_x) < _halfwidth(anat, y, z, "cavity")


def _diaphragm_z(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Craniocaudal position of the lung bases (top of the diaphragm) at ``(x, y)``.

    Two paraboloid domes; the diaphragm is the higher (smaller ``z``) of the two, which
    leaves a continuous saddle at the midline where the heart rests.
    """
    k_lat, k_ant, k_post = _DOME_CURVATURE
    surface = None
    for xa, ya, za in anat.diaphragm_domes:
        dy = y - ya
        dome = za + k_lat * (x - xa) ** 2 + np.where(dy < 0, k_ant, k_post) * dy**2
        dome = np.minimum(dome, za + _DOME_DEPTH)
        surface = dome if surface is None else np.minimum(surface, dome)
    return surface


def _below_diaphragm(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Whether points lie below the diaphragm muscle (abdomen, not thorax)."""
    return z >= _diaphragm_z(anat, x, y) + _DIAPHRAGM_MM


def _kidney_sinus(kidney: Ellipsoid) -> tuple[Ellipsoid, Ellipsoid]:
    """Renal sinus (fat) and renal pelvis (urine) of a kidney, opening at its hilum (+x)."""
    a, b, c = kidney.half_axes
    sinus = Ellipsoid(
        tuple(kidney.point((0.6, 0.0, 0.0))), (0.55 * a, 0.45 * b, 0.5 * c), kidney.angles
    )
    pelvis = Ellipsoid(
        tuple(kidney.point((0.45, 0.0, 0.05))), (0.35 * a, 0.3 * b, 0.28 * c), kidney.angles
    )
    return sinus, pelvis


def _organ_contains(
    anat: Anatomy, organ: str, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Whether points lie in the parenchyma of ``liver``, ``spleen``, ``kidney_right/left``."""
    if organ == "liver":
        inside = (
            np.minimum(_ellipsoid_s(anat.liver[0], x, y, z), _ellipsoid_s(anat.liver[1], x, y, z))
            <= 1.0
        )
        inside &= _in_cavity(anat, x, y, z) & _below_diaphragm(anat, x, y, z)
        inside &= (_ellipsoid_s(anat.kidneys[0], x, y, z) > 1.05) & ~_near_spine(anat, x, y)
        if anat.gallbladder is not None:
            inside &= _ellipsoid_s(anat.gallbladder, x, y, z) > 1.1
        return inside
    if organ == "spleen":
        inside = _ellipsoid_s(anat.spleen, x, y, z) <= 1.0
        inside &= _ellipsoid_s(anat.spleen_hilum, x, y, z) > 1.0
        inside &= _in_cavity(anat, x, y, z) & _below_diaphragm(anat, x, y, z)
        return inside & (_ellipsoid_s(anat.kidneys[1], x, y, z) > 1.05)
    kidney = anat.kidneys[0 if organ == "kidney_right" else 1]
    sinus, _ = _kidney_sinus(kidney)
    return (_ellipsoid_s(kidney, x, y, z) <= 0.95) & (_ellipsoid_s(sinus, x, y, z) > 1.1)


def _near_spine(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The spine and the great vessels in front of it (painted over the solid organs)."""
    cx, vb_y = anat.vertebra_xy
    hx, hy = anat.vertebra_half_axes
    return (np.abs(x - cx) < hx + 30.0) & (y > vb_y - hy - 32.0)


# --------------------------------------------------------------------------------------
# Canvas


@dataclass(frozen=True, eq=False)
class _Grid:
    """Voxel-centre coordinates (mm) of a ``(D, H, W)`` volume."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @classmethod
    def make(cls, shape: tuple[int, int, int], spacing: Vec3, z_offset_mm: float) -> _Grid:
        (d, h, w), (sz, sy, sx) = shape, spacing
        return cls(
            (z_offset_mm + (np.arange(d) + 0.5) * sz).astype(np.float32),
            ((np.arange(h) + 0.5 - h / 2.0) * sy).astype(np.float32),
            ((np.arange(w) + 0.5 - w / 2.0) * sx).astype(np.float32),
        )

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice] | None:
        """Voxel slices ``(z, y, x)`` whose centres lie in ``[lo, hi]`` (``(x, y, z)`` mm)."""
        slices = []
        for axis, a, b in ((self.z, lo[2], hi[2]), (self.y, lo[1], hi[1]), (self.x, lo[0], hi[0])):
            i0 = int(np.searchsorted(axis, a, "left"))
            i1 = int(np.searchsorted(axis, b, "right"))
            if i1 <= i0:
                return None
            slices.append(slice(i0, i1))
        return slices[0], slices[1], slices[2]

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, ...]:
        """Broadcastable ``x (1, 1, w)``, ``y (1, h, 1)``, ``z (d, 1, 1)`` of a box."""
        return (
            self.x[box[2]][None, None, :],
            self.y[box[1]][None, :, None],
            self.z[box[0]][:, None, None],
        )


@dataclass(frozen=True, eq=False)
class _Canvas:
    """The volume being painted: HU (float32), organ codes and injury codes."""

    grid: _Grid
    hu: np.ndarray
    organs: np.ndarray
    injuries: np.ndarray

    @classmethod
    def empty(cls, grid: _Grid) -> _Canvas:
        shape = (len(grid.z), len(grid.y), len(grid.x))
        return cls(
            grid,
            np.full(shape, _AIR_HU, dtype=np.float32),
            np.zeros(shape, dtype=np.uint8),
            np.zeros(shape, dtype=np.uint8),
        )

    def paint(
        self,
        box: tuple[slice, slice, slice],
        mask: np.ndarray,
        hu: float | np.ndarray,
        organ: int | np.ndarray | None = None,
        injury: int | None = None,
    ) -> None:
        """Set HU and codes (scalars or arrays broadcastable to the box) where ``mask``."""
        hu_box = self.hu[box]
        mask = np.broadcast_to(mask, hu_box.shape)
        if np.ndim(hu):
            hu_box[mask] = np.broadcast_to(hu, hu_box.shape)[mask]
        else:
            hu_box[mask] = hu
        if organ is not None:
            organ_box = self.organs[box]
            if np.ndim(organ):
                organ_box[mask] = np.broadcast_to(organ, organ_box.shape)[mask]
            else:
                organ_box[mask] = organ
        if injury is not None:
            self.injuries[box][mask] = injury

    def fat(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        """Fat voxels (soft tissue between -200 and -30 HU) of a box."""
        hu = self.hu[box]
        return (self.organs[box] == _SOFT) & (hu > -200.0) & (hu < -30.0)


def _ellipsoid_box(
    canvas: _Canvas, e: Ellipsoid, pad: float = 1.0
) -> tuple[tuple[slice, slice, slice] | None, tuple[np.ndarray, ...]]:
    """The bounding box of an ellipsoid and its coordinates (empty arrays if it misses)."""
    ext = e.extent() * pad + 1.0
    box = canvas.grid.box(np.asarray(e.center) - ext, np.asarray(e.center) + ext)
    if box is None:
        empty = np.zeros((0, 0, 0), dtype=np.float32)
        return None, (empty, empty, empty)
    return box, canvas.grid.coords(box)


def _tube_field(
    canvas: _Canvas, tube: Tube, margin: float = 1.0
) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
    """Distance field of a tube over its bounding box.

    Returns:
        ``(box, s, dy, position)``: ``s`` the distance to the centreline divided by the local
        radius (``< 1`` inside, ``inf`` far away), ``dy`` the ``y`` offset from the nearest
        centreline point (negative = anterior), ``position`` the fractional vertex index of
        that point. None if the tube misses the volume.
    """
    grid = canvas.grid
    pad = tube.radius.max() * margin + 1.0
    box = grid.box(tube.points.min(axis=0) - pad, tube.points.max(axis=0) + pad)
    if box is None:
        return None
    shape = tuple(s.stop - s.start for s in box)
    best = np.full(shape, np.inf, dtype=np.float32)
    best_dy = np.zeros(shape, dtype=np.float32)
    position = np.zeros(shape, dtype=np.float32)
    for i in range(len(tube.points) - 1):
        a, b = tube.points[i], tube.points[i + 1]
        r0, r1 = tube.radius[i], tube.radius[i + 1]
        seg_pad = max(r0, r1) * margin + 1.0
        sub = grid.box(np.minimum(a, b) - seg_pad, np.maximum(a, b) + seg_pad)
        if sub is None:
            continue
        x, y, z = grid.coords(sub)
        local = tuple(
            slice(s.start - o.start, s.stop - o.start) for s, o in zip(sub, box, strict=True)
        )
        d = (b - a).tolist()
        a = a.tolist()
        px, py, pz = x - a[0], y - a[1], z - a[2]
        inv_len2 = 1.0 / max(d[0] ** 2 + d[1] ** 2 + d[2] ** 2, 1e-9)
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) * inv_len2, 0.0, 1.0)
        ex, ey, ez = px - t * d[0], py - t * d[1], pz - t * d[2]
        s = np.sqrt(ex * ex + ey * ey + ez * ez) / (r0 + t * (r1 - r0))
        view = best[local]
        closer = s < view
        view[closer] = s[closer]
        best_dy[local][closer] = np.broadcast_to(ey, s.shape)[closer]
        position[local][closer] = (i + t)[closer]
    return box, best, best_dy, position


def _paint_tube(
    canvas: _Canvas,
    tube: Tube,
    *,
    lumen_hu: float,
    wall_hu: float,
    organ: int | None,
    hosts: Sequence[int] | None = None,
    injured: tuple[int, int] | None = None,
) -> None:
    """Paint a tube: wall, fluid lumen and gas; ``injured`` vertex range gets a thick wall."""
    field = _tube_field(canvas, tube)
    if field is None:
        return
    box, s, dy, position = field
    inside = s < 1.0
    if hosts is not None:
        inside &= np.isin(canvas.organs[box], hosts)
    pos = position[inside]
    vertex = np.arange(len(tube.points))
    radius = np.interp(pos, vertex, tube.radius)
    wall = np.interp(pos, vertex, tube.wall)
    lumen_radius = radius - wall
    lumen = s[inside] * radius < lumen_radius
    gas = lumen & (dy[inside] < -np.interp(pos, vertex, tube.gas) * lumen_radius)
    values = np.where(gas, _AIR_HU, np.where(lumen, lumen_hu, wall_hu))
    if injured is not None:
        thick = ~lumen & (pos >= injured[0]) & (pos <= injured[1])
        values = np.where(thick, _THICK_WALL_HU, values)
        injury_box = canvas.injuries[box]
        codes = injury_box[inside]
        codes[thick] = INJURY_CODES["bowel"]
        injury_box[inside] = codes
    canvas.hu[box][inside] = values
    if organ is not None:
        canvas.organs[box][inside] = organ


# --------------------------------------------------------------------------------------
# Painting the anatomy


def _paint_body(canvas: _Canvas, anat: Anatomy) -> None:
    """Skin, subcutaneous fat, muscle wall and (visceral fat in) the cavity."""
    grid = canvas.grid
    y = grid.y[None, :, None]
    z = grid.z[:, None, None]
    ax = np.abs(grid.x - anat.center_x)[None, None, :]
    layer = np.zeros(canvas.hu.shape, dtype=np.uint8)
    for name in ("skin", "dermis", "fat", "cavity"):
        layer += ax < _halfwidth(anat, y, z, name).astype(np.float32)
    lut = np.array([_AIR_HU, _SKIN_HU, anat.fat_hu, anat.muscle_hu, anat.fat_hu], dtype=np.float32)
    canvas.hu[...] = lut[layer]
    canvas.organs[...] = np.minimum(layer, 1)


def _paint_table(canvas: _Canvas, anat: Anatomy) -> None:
    """A curved CT table below the patient: two thin shells around a foam core."""
    grid = canvas.grid
    x = grid.x[None, :] - anat.center_x
    top = anat.table_y - anat.table_curvature * x**2
    depth = grid.y[:, None] - top
    within = np.abs(x) < 230.0
    table = within & (depth >= 0) & (depth < 14.0)
    shell = table & ((depth < 3.0) | (depth >= 11.0))
    hu = np.where(shell, _TABLE_SHELL_HU, _TABLE_CORE_HU).astype(np.float32)
    canvas.hu[:, table] = hu[table]
    canvas.organs[:, table] = _TABLE


def _paint_thorax(canvas: _Canvas, anat: Anatomy) -> None:
    """Lung bases, the diaphragm and the heart above it."""
    z_top = max(d[2] for d in anat.diaphragm_domes) + _DOME_DEPTH + _DIAPHRAGM_MM + 1.0
    box = canvas.grid.box((-1e4, -1e4, -1e4), (1e4, 1e4, z_top))
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    z_dia = _diaphragm_z(anat, x, y)
    cavity = _in_cavity(anat, x, y, z)
    above = z < z_dia
    cx, vb_y = anat.vertebra_xy
    hx, hy = anat.vertebra_half_axes
    # The spine and its posterior elements, wrapped by the lungs at its sides.
    spine_y = vb_y + hy + 8.0
    behind_spine = ((x - cx) / (hx + 12.0)) ** 2 + ((y - spine_y) / (2.0 * hy + 20.0)) ** 2 < 1.0
    lung = cavity & above & ~behind_spine
    canvas.paint(box, lung, _LUNG_HU, _LUNG)
    diaphragm = cavity & ~above & (z < z_dia + _DIAPHRAGM_MM)
    canvas.paint(box, diaphragm, anat.muscle_hu, _SOFT)
    hbox, (hx, hy, hz) = _ellipsoid_box(canvas, anat.heart)
    if hbox is not None:
        heart = (_ellipsoid_s(anat.heart, hx, hy, hz) <= 1.0) & (hz < _diaphragm_z(anat, hx, hy))
        heart &= _in_cavity(anat, hx, hy, hz)
        canvas.paint(hbox, heart, anat.ivc_hu, _SOFT)


def _paint_back_muscles(canvas: _Canvas, anat: Anatomy) -> None:
    """Paraspinal muscles along the whole spine and psoas muscles from L1 down."""
    cx, vb_y = anat.vertebra_xy
    hx = anat.vertebra_half_axes[0]
    para_y = anat.back_y - anat.fat_thickness[2] - 26.0
    box = canvas.grid.box((cx - 80.0, vb_y - 30.0, -1e4), (cx + 80.0, anat.back_y, 1e4))
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    para = ((np.abs(x - cx) - 36.0) / 30.0) ** 2 + ((y - para_y) / 27.0) ** 2 <= 1.0
    cavity = np.abs(x - anat.center_x) < _halfwidth(anat, y, z, "fat")
    canvas.paint(box, para & cavity, anat.muscle_hu, _SOFT)
    radius = np.interp(z, [anat.l1_top_z, anat.l1_top_z + 150.0], [5.0, 24.0])
    radius = np.where(z < anat.l1_top_z, 0.0, radius)
    psoas_x = hx + 0.8 * radius + 2.0
    psoas = ((np.abs(x - cx) - psoas_x) ** 2 + (y - vb_y + 2.0) ** 2) <= radius**2
    canvas.paint(box, psoas, anat.muscle_hu, _SOFT)


def _paint_hollow_ellipsoid(
    canvas: _Canvas, anat: Anatomy, e: Ellipsoid, wall_mm: float, gas_level: float
) -> None:
    """A gas- and fluid-filled viscus (stomach) with a wall, below the diaphragm."""
    box, (x, y, z) = _ellipsoid_box(canvas, e)
    if box is None:
        return
    s = _ellipsoid_s(e, x, y, z)
    organ = (s <= 1.0) & _in_cavity(anat, x, y, z) & _below_diaphragm(anat, x, y, z)
    lumen = s <= 1.0 - wall_mm / min(e.half_axes)
    gas = lumen & (y < e.center[1] - gas_level * e.half_axes[1])
    hu = np.where(gas, _AIR_HU, np.where(lumen, _FLUID_HU, _BOWEL_WALL_HU)).astype(np.float32)
    canvas.paint(box, organ, hu, _BOWEL)


def _paint_gut(canvas: _Canvas, anat: Anatomy, bowel: _BowelInjury | None) -> None:
    """Stomach, colon and small bowel (with the injured loop's thick wall)."""
    _paint_hollow_ellipsoid(canvas, anat, anat.stomach, 4.0, 0.35)
    _paint_tube(canvas, anat.colon, lumen_hu=_STOOL_HU, wall_hu=_BOWEL_WALL_HU, organ=_BOWEL)
    for i, loop in enumerate(anat.small_bowel):
        injured = None
        if bowel is not None and bowel.loop == i:
            loop, injured = bowel.thick_loop, bowel.window
        _paint_tube(
            canvas,
            loop,
            lumen_hu=_FLUID_HU,
            wall_hu=_BOWEL_WALL_HU,
            organ=_BOWEL,
            injured=injured,
        )


def _paint_liver(canvas: _Canvas, anat: Anatomy) -> None:
    """Liver lobes under the right dome, hugging the wall, with bright portal/hepatic veins."""
    lo = np.minimum(*(np.asarray(e.center) - e.extent() for e in anat.liver))
    hi = np.maximum(*(np.asarray(e.center) + e.extent() for e in anat.liver))
    box = canvas.grid.box(lo - 1.0, hi + 1.0)
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    s = np.minimum(_ellipsoid_s(anat.liver[0], x, y, z), _ellipsoid_s(anat.liver[1], x, y, z))
    liver = (s <= 1.0) & _in_cavity(anat, x, y, z) & _below_diaphragm(anat, x, y, z)
    canvas.paint(box, liver, anat.liver_hu, _LIVER)
    for vessel in anat.liver_vessels:
        _paint_tube(
            canvas,
            vessel,
            lumen_hu=anat.portal_hu,
            wall_hu=anat.portal_hu,
            organ=None,
            hosts=(_LIVER,),
        )
    if anat.gallbladder is not None:
        gbox, (gx, gy, gz) = _ellipsoid_box(canvas, anat.gallbladder)
        if gbox is not None:
            gb = (_ellipsoid_s(anat.gallbladder, gx, gy, gz) <= 1.0) & _in_cavity(anat, gx, gy, gz)
            canvas.paint(gbox, gb, _FLUID_HU, _SOFT)


def _paint_spleen(canvas: _Canvas, anat: Anatomy) -> None:
    """Spleen along the left posterolateral wall, concave at its hilum."""
    box, (x, y, z) = _ellipsoid_box(canvas, anat.spleen)
    if box is None:
        return
    spleen = (_ellipsoid_s(anat.spleen, x, y, z) <= 1.0) & (
        _ellipsoid_s(anat.spleen_hilum, x, y, z) > 1.0
    )
    spleen &= _in_cavity(anat, x, y, z) & _below_diaphragm(anat, x, y, z)
    canvas.paint(box, spleen, anat.spleen_hu, _SPLEEN)


def _paint_kidneys(canvas: _Canvas, anat: Anatomy) -> None:
    """Kidneys: cortex, medulla, renal sinus fat and a urine-filled pelvis at the hilum."""
    for kidney, code in zip(anat.kidneys, (_KIDNEY_R, _KIDNEY_L), strict=True):
        box, (x, y, z) = _ellipsoid_box(canvas, kidney)
        if box is None:
            continue
        s = _ellipsoid_s(kidney, x, y, z)
        sinus, pelvis = _kidney_sinus(kidney)
        hu = np.where(s > 0.72, anat.kidney_cortex_hu, anat.kidney_medulla_hu)
        hu = np.where(_ellipsoid_s(sinus, x, y, z) <= 1.0, _SINUS_FAT_HU, hu)
        hu = np.where(_ellipsoid_s(pelvis, x, y, z) <= 1.0, _FLUID_HU, hu).astype(np.float32)
        canvas.paint(box, s <= 1.0, hu, code)


def _paint_bladder(canvas: _Canvas, anat: Anatomy) -> None:
    """Urine-filled bladder in the pelvis."""
    box, (x, y, z) = _ellipsoid_box(canvas, anat.bladder)
    if box is not None:
        inside = (_ellipsoid_s(anat.bladder, x, y, z) <= 1.0) & _in_cavity(anat, x, y, z)
        canvas.paint(box, inside, _FLUID_HU, _SOFT)


def _paint_vessels(canvas: _Canvas, anat: Anatomy) -> None:
    """IVC, aorta and iliac arteries (contrast-enhanced blood)."""
    _paint_tube(canvas, anat.ivc, lumen_hu=anat.ivc_hu, wall_hu=anat.ivc_hu, organ=_SOFT)
    for artery in (anat.aorta, *anat.iliac_arteries):
        _paint_tube(canvas, artery, lumen_hu=anat.aorta_hu, wall_hu=anat.aorta_hu, organ=_AORTA)


def _paint_spine(canvas: _Canvas, anat: Anatomy) -> None:
    """Vertebral bodies (cortex and cancellous bone), discs, arch, spinous and transverse
    processes; the sacrum below S1."""
    cx, vb_y = anat.vertebra_xy
    hx0, hy = anat.vertebra_half_axes
    box = canvas.grid.box((cx - 110.0, vb_y - hy - 5.0, -1e4), (cx + 110.0, anat.back_y, 1e4))
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    s1 = anat.s1_top_z
    pitch = anat.vertebra_pitch
    sacrum = z >= s1
    hx = hx0 * np.interp(
        z,
        [anat.l1_top_z - 150.0, anat.l1_top_z, s1 - 5.0, s1 + 10.0, s1 + 120.0],
        [0.82, 1.0, 1.12, 2.3, 1.1],
    )
    yv = vb_y + 0.35 * np.clip(z - s1, 0.0, None)
    phase = np.mod(z - anat.l1_top_z, pitch) / pitch
    disc = (phase > 1.0 - 7.0 / pitch) & ~sacrum
    r2 = ((x - cx) / hx) ** 2 + ((y - yv) / hy) ** 2
    body = r2 <= 1.0
    cortex = r2 > (1.0 - 2.5 / hy) ** 2
    hu = np.where(disc, _DISC_HU, np.where(cortex, _CORTICAL_HU, _CANCELLOUS_HU))
    canvas.paint(box, body, hu.astype(np.float32), np.where(disc, _SOFT, _BONE))

    canal_y = yv + hy + 8.0
    canal_r = 8.0
    dist = np.sqrt((x - cx) ** 2 + (y - canal_y) ** 2)
    arch = (dist >= canal_r) & (dist < canal_r + 6.0) & (y > yv + 0.6 * hy) & ~disc
    spinous = (np.abs(x - cx) < 4.0) & (y > canal_y) & (y < canal_y + canal_r + 40.0)
    spinous &= (phase < 0.55) | sacrum
    transverse = (np.abs(y - canal_y) < 3.5) & (np.abs(x - cx) < canal_r + 34.0)
    transverse &= (phase > 0.3) & (phase < 0.5) & ~sacrum
    inside_fat = np.abs(x - anat.center_x) < _halfwidth(anat, y, z, "fat")
    canvas.paint(box, (arch | spinous | transverse) & inside_fat, _BONE_PLATE_HU, _BONE)
    canvas.paint(box, dist < canal_r, _CSF_HU, _SOFT)


def _paint_ribs(canvas: _Canvas, anat: Anatomy) -> None:
    """Rib cross-sections in the chest wall, descending from the spine towards anterior."""
    if not anat.ribs:
        return
    z_lo = min(r[0] for r in anat.ribs) - 6.0
    z_hi = max(r[0] + r[1] * np.pi for r in anat.ribs) + 6.0
    box = canvas.grid.box((-1e4, -1e4, z_lo), (1e4, 1e4, z_hi))
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    ax = np.abs(x - anat.center_x)
    inner = _halfwidth(anat, y, z, "cavity")
    ring = (ax >= inner) & (ax < inner + 9.0) & (ax < _halfwidth(anat, y, z, "dermis"))
    idx = np.nonzero(ring)
    if len(idx[0]) == 0:
        return
    zz = canvas.grid.z[box[0]][idx[0]]
    yy = canvas.grid.y[box[1]][idx[1]] - (anat.back_y - anat.body_half_depth_posterior)
    xx = ax[0, 0, idx[2]]
    angle = np.arctan2(xx / anat.body_half_width, -yy / anat.body_half_depth_anterior)
    bone = np.zeros(len(zz), dtype=bool)
    for z0, descent, first_angle in anat.ribs:
        z_rib = z0 + descent * (np.pi - angle)
        bone |= (np.abs(zz - z_rib) < 5.0) & (angle >= first_angle) & (angle < np.pi - 0.35)
    sub_hu = canvas.hu[box]
    sub_org = canvas.organs[box]
    sel = tuple(i[bone] for i in idx)
    sub_hu[sel] = _BONE_PLATE_HU
    sub_org[sel] = _BONE


def _paint_pelvis(canvas: _Canvas, anat: Anatomy) -> None:
    """Iliac wings: curved bony plates from the sacroiliac joints to the anterior iliac spines.

    Each wing is a quadratic Bezier curve in the axial plane, extruded caudally from the iliac
    crest, which is highest halfway along the wing.
    """
    cx, vb_y = anat.vertebra_xy
    crest = anat.iliac_crest_z
    box = canvas.grid.box((-1e4, -1e4, crest), (1e4, 1e4, crest + 140.0))
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    yc = anat.back_y - anat.body_half_depth_posterior
    a = anat.body_half_width - anat.fat_thickness[0] - anat.muscle_thickness[0]
    ba = anat.body_half_depth_anterior - anat.fat_thickness[1] - anat.muscle_thickness[1]
    sacrum_edge = 2.3 * anat.vertebra_half_axes[0] + 2.0
    inside = np.abs(x - anat.center_x) < _halfwidth(anat, y, z, "fat")
    tau = np.linspace(0.0, 1.0, 24)[:, None]
    for side in (-1.0, 1.0):
        p0 = np.array([cx + side * sacrum_edge, vb_y + 12.0])
        p2 = np.array([cx + side * 0.85 * a, yc - 0.3 * ba])
        p1 = 0.5 * (p0 + p2) + np.array([side * 18.0, 18.0])  # concave anteromedially
        curve = (1 - tau) ** 2 * p0 + 2 * tau * (1 - tau) * p1 + tau**2 * p2
        dist, position = _polyline_distance_2d(x[0], y[0], curve)
        top = crest + 120.0 * (position / (len(curve) - 1) - 0.45) ** 2
        plate = (dist < 4.0)[None] & (z >= top[None]) & inside
        canvas.paint(box, plate, _BONE_PLATE_HU, _BONE)


def _polyline_distance_2d(
    x: np.ndarray, y: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from in-plane points to a 2D polyline and the fractional vertex index there.

    Args:
        x: ``(1, w)`` mm.
        y: ``(h, 1)`` mm.
        points: ``(N, 2)`` vertices ``(x, y)`` mm.

    Returns:
        ``(dist, position)``, both ``(h, w)``.
    """
    best = np.full(np.broadcast_shapes(x.shape, y.shape), np.inf, dtype=np.float32)
    position = np.zeros_like(best)
    for i in range(len(points) - 1):
        (ax, ay), (bx, by) = points[i], points[i + 1]
        dx, dy = bx - ax, by - ay
        t = np.clip(((x - ax) * dx + (y - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
        dist = np.hypot(x - ax - t * dx, y - ay - t * dy)
        closer = dist < best
        best = np.where(closer, dist, best)
        position = np.where(closer, i + t, position)
    return best, position


# --------------------------------------------------------------------------------------
# Injuries


@dataclass(frozen=True, eq=False)
class _Cleft:
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
class _Shatter:
    """A large irregular hypodense region of an organ with a mottled texture."""

    organs: tuple[int, ...]
    target: int
    center: np.ndarray
    radius: float
    lobes: tuple[Lobe, ...]
    texture: tuple[tuple[float, float, float, float, float], ...]  # nx, ny, nz, freq, phase
    hu: float


@dataclass(frozen=True, eq=False)
class _Hematoma:
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
class _Blob:
    """A lobulated blob painted over the host codes (or only over fat in the cavity)."""

    shape: Ellipsoid
    target: int
    hu: float
    hosts: tuple[int, ...]
    fat_only: bool = False


@dataclass(frozen=True, eq=False)
class _BowelInjury:
    loop: int
    thick_loop: Tube
    window: tuple[int, int]


@dataclass(frozen=True, eq=False)
class _InjuryPlan:
    lesions: tuple[_Cleft | _Shatter | _Hematoma | _Blob, ...]
    bowel: _BowelInjury | None


_ORGAN_TARGET_CODES: Final[dict[str, tuple[int, ...]]] = {
    "liver": (_LIVER,),
    "spleen": (_SPLEEN,),
    "kidney_right": (_KIDNEY_R,),
    "kidney_left": (_KIDNEY_L,),
}


def _plan_injuries(anat: Anatomy, labels: InjuryLabels) -> _InjuryPlan:
    """Injury geometry, deterministic given ``anat.seed`` and the labels."""

    def rng_for(target: str) -> np.random.Generator:
        return np.random.default_rng([anat.seed, 17, TARGETS.index(target)])

    lesions: list[_Cleft | _Shatter | _Hematoma | _Blob] = []
    sites: list[tuple[np.ndarray, tuple[int, ...]]] = []
    for target in ("liver", "spleen", "kidney"):
        grade = getattr(labels, target)
        if grade == 0:
            continue
        rng = rng_for(target)
        organ = target
        if target == "kidney":
            organ = ("kidney_right", "kidney_left")[int(rng.integers(2))]
        organ_lesions, site = _plan_organ_injury(anat, organ, grade, rng)
        lesions.extend(organ_lesions)
        sites.append((site, _ORGAN_TARGET_CODES[organ]))
    bowel = None
    if labels.bowel:
        bowel, bowel_lesions, site = _plan_bowel_injury(anat, rng_for("bowel"))
        lesions.extend(bowel_lesions)
        sites.append((site, ()))
    if labels.extravasation:
        lesions.extend(_plan_extravasation(anat, sites, rng_for("extravasation")))
    return _InjuryPlan(tuple(lesions), bowel)


def _organ_ellipsoid(anat: Anatomy, organ: str, grade: int, rng: np.random.Generator) -> Ellipsoid:
    """The ellipsoid that hosts a lesion (a high-grade liver injury is in the right lobe)."""
    if organ == "liver":
        return anat.liver[0] if grade == 2 or rng.random() < 0.8 else anat.liver[1]
    if organ == "spleen":
        return anat.spleen
    return anat.kidneys[0 if organ == "kidney_right" else 1]


def _sample_in_organ(
    anat: Anatomy,
    organ: str,
    e: Ellipsoid,
    rng: np.random.Generator,
    radius: tuple[float, float],
    probe: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """A point of the organ at a normalised radius in ``radius`` (rejection sampling).

    ``probe(point) -> (K, 3)`` gives further points that must lie in the organ too.
    """
    fallback = None
    for _ in range(400):
        p = e.point(_random_direction(rng) * rng.uniform(*radius))
        pts = p[None, :] if probe is None else np.vstack([p[None, :], probe(p)])
        inside = _organ_contains(anat, organ, pts[:, 0], pts[:, 1], pts[:, 2])
        if inside.all():
            return p
        if fallback is None and inside[0]:
            fallback = p
    return fallback if fallback is not None else np.asarray(e.center, dtype=float)


def _cleft_basis(
    center: np.ndarray, organ_center: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Orthonormal rows: outward in-plane direction, thin direction, near-craniocaudal."""
    out = center - organ_center
    out[2] *= 0.3
    if np.linalg.norm(out) < 1e-6:
        out = _random_direction(rng)
    out = out / np.linalg.norm(out)
    up = np.array([0.0, 0.0, 1.0]) + rng.normal(0.0, 0.25, 3)
    up -= (up @ out) * out
    up /= np.linalg.norm(up)
    return np.stack([out, np.cross(up, out), up])


def _make_cleft(
    anat: Anatomy,
    organ: str,
    e: Ellipsoid,
    rng: np.random.Generator,
    *,
    target: int,
    length: float,
    half_height: float,
    hu: float,
    radius: tuple[float, float],
    center: np.ndarray | None = None,
) -> _Cleft:
    """A laceration in ``organ`` (hosted by ``e``), at ``center`` or a sampled point."""

    def probe(p: np.ndarray) -> np.ndarray:
        basis = _cleft_basis(p, np.asarray(e.center), np.random.default_rng(0))
        return np.stack([p - 0.3 * length * basis[0], p + 0.2 * length * basis[0]])

    if center is None:
        center = _sample_in_organ(anat, organ, e, rng, radius, probe)
    basis = _cleft_basis(center, np.asarray(e.center), rng)
    return _Cleft(
        organs=_ORGAN_TARGET_CODES[organ],
        target=target,
        center=center + 0.15 * length * basis[0],
        basis=basis,
        length=length,
        half_width=float(rng.uniform(3.0, 4.0)),
        half_height=half_height,
        wobble=(
            float(rng.uniform(0.5, 1.5)),
            float(rng.uniform(0.15, 0.35)),
            float(rng.uniform(0, 2 * np.pi)),
        ),
        hu=hu,
    )


def _plan_organ_injury(
    anat: Anatomy, organ: str, grade: int, rng: np.random.Generator
) -> tuple[list[_Cleft | _Shatter | _Hematoma | _Blob], np.ndarray]:
    """Low grade: one or two lacerations. High grade: shattered region, clefts, hematoma."""
    target = INJURY_CODES["kidney" if organ.startswith("kidney") else organ]
    kidney = organ.startswith("kidney")
    e = _organ_ellipsoid(anat, organ, grade, rng)
    codes = _ORGAN_TARGET_CODES[organ]
    lesions: list[_Cleft | _Shatter | _Hematoma | _Blob] = []
    if grade == 1:
        for _ in range(1 + int(rng.random() < 0.5)):
            lesions.append(
                _make_cleft(
                    anat,
                    organ,
                    e,
                    rng,
                    target=target,
                    length=float(rng.uniform(18.0, 28.0) if kidney else rng.uniform(22.0, 35.0)),
                    half_height=float(rng.uniform(8.0, 12.0) if kidney else rng.uniform(8.0, 14.0)),
                    hu=float(rng.uniform(30.0, 40.0)),
                    radius=(0.45, 0.8),
                )
            )
        return lesions, lesions[0].center

    center = _sample_in_organ(anat, organ, e, rng, (0.3, 0.6))
    lobes = _draw_lobes(rng, 3, 0.15)
    radius = _shatter_radius(anat, organ, center, lobes, float(rng.uniform(0.35, 0.55)), rng)
    texture = tuple(
        (*_random_direction(rng), float(rng.uniform(0.12, 0.35)), float(rng.uniform(0, 2 * np.pi)))
        for _ in range(3)
    )
    lesions.append(
        _Shatter(codes, target, center, radius, lobes, texture, float(rng.uniform(38.0, 48.0)))
    )
    for _ in range(int(rng.integers(2, 4))):
        lesions.append(
            _make_cleft(
                anat,
                organ,
                e,
                rng,
                target=target,
                length=float(rng.uniform(20.0, 30.0) if kidney else rng.uniform(30.0, 50.0)),
                half_height=float(rng.uniform(10.0, 18.0)),
                hu=float(rng.uniform(20.0, 30.0)),
                radius=(0.3, 0.6),
                center=center + rng.normal(0.0, 0.25 * radius, 3),
            )
        )
    local = np.asarray(e.rotation.T @ (center - np.asarray(e.center))) / np.asarray(e.half_axes)
    surface = e.point(local / max(np.linalg.norm(local), 1e-6))
    lesions.append(
        _Hematoma(
            organ,
            codes,
            target,
            surface,
            1.4 * radius,
            min(e.half_axes),
            float(rng.uniform(10.0, 16.0)),
            float(rng.uniform(50.0, 60.0)),
        )
    )
    return lesions, center


def _shatter_radius(
    anat: Anatomy,
    organ: str,
    center: np.ndarray,
    lobes: tuple[Lobe, ...],
    fraction: float,
    rng: np.random.Generator,
) -> float:
    """Radius (mm) of a lobulated ball at ``center`` covering ``fraction`` of the organ.

    Monte Carlo over points of the organ, then bisection on the radius.
    """
    shapes = anat.liver if organ == "liver" else (_organ_ellipsoid(anat, organ, 2, rng),)
    lo = np.min([np.asarray(e.center) - e.extent() for e in shapes], axis=0)
    hi = np.max([np.asarray(e.center) + e.extent() for e in shapes], axis=0)
    points = rng.uniform(lo, hi, size=(8000, 3))
    points = points[_organ_contains(anat, organ, points[:, 0], points[:, 1], points[:, 2])]
    if len(points) == 0:
        return float(np.mean(shapes[0].half_axes))

    def covered(radius: float) -> float:
        ball = Ellipsoid(tuple(center), (radius, radius, radius), lobes=lobes)
        return float(np.mean(_ellipsoid_s(ball, points[:, 0], points[:, 1], points[:, 2]) <= 1))

    low, high = 1.0, 250.0
    for _ in range(20):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if covered(mid) < fraction else (low, mid)
    return 0.5 * (low + high)


def _plan_bowel_injury(
    anat: Anatomy, rng: np.random.Generator
) -> tuple[_BowelInjury, list[_Blob], np.ndarray]:
    """A thick-walled segment of one loop, free fluid between loops, extraluminal gas."""
    order = rng.permutation(len(anat.small_bowel))
    loop_index, vertex = int(order[0]), None
    for i in order:
        z = anat.small_bowel[i].points[:, 2]
        candidates = np.flatnonzero((z > anat.l1_top_z + 50.0) & (z < anat.s1_top_z - 10.0))
        if len(candidates):
            loop_index, vertex = int(i), int(rng.choice(candidates))
            break
    loop = anat.small_bowel[loop_index]
    n = len(loop.points)
    if vertex is None:
        vertex = n // 2
    half = int(rng.integers(4, 7))
    window = (max(0, vertex - half), min(n - 1, vertex + half))
    thick = float(rng.uniform(6.0, 8.0))
    wall = loop.wall.copy()
    ramp = np.clip(
        np.minimum(np.arange(n) - window[0] + 1, window[1] - np.arange(n) + 1) / 2.0, 0.0, 1.0
    )
    wall = np.maximum(wall, np.minimum(thick, loop.radius - 2.5) * ramp)
    thick_loop = Tube(loop.points, loop.radius, wall, loop.gas)
    center = loop.points[vertex]

    lesions: list[_Blob] = []
    for _ in range(int(rng.integers(4, 7))):
        r = float(rng.uniform(3.5, 5.0))
        for attempt in range(60):
            i = int(rng.integers(window[0], window[1] + 1))
            tangent = loop.points[min(i + 1, n - 1)] - loop.points[max(i - 1, 0)]
            side = np.cross(tangent, _random_direction(rng))
            side /= max(float(np.linalg.norm(side)), 1e-6)
            gap = rng.uniform(1.0, 5.0 + 0.3 * attempt)
            p = loop.points[i] + side * (loop.radius[i] + r + gap)
            if _in_free_fat(anat, p, r):
                break
        lesions.append(
            _Blob(
                Ellipsoid(tuple(p), (r, r, 1.3 * r)),
                INJURY_CODES["bowel"],
                -950.0,
                (_SOFT,),
                fat_only=True,
            )
        )
    cx, vb_y = anat.vertebra_xy
    pelvic_pocket = np.array(
        [cx + rng.uniform(-30.0, 30.0), vb_y - 20.0, anat.s1_top_z + rng.uniform(20.0, 50.0)]
    )
    for k in range(int(rng.integers(4, 6))):
        for _ in range(30):
            if k == 0:  # fluid collects in the dependent pelvis
                p = pelvic_pocket + rng.uniform(-15.0, 15.0, 3)
            else:
                i = int(rng.integers(max(0, window[0] - 6), min(n, window[1] + 7)))
                p = loop.points[i] + _random_direction(rng) * (
                    loop.radius[i] + rng.uniform(5.0, 20.0)
                )
            if _in_free_fat(anat, p, 0.0):
                break
        lesions.append(
            _Blob(
                Ellipsoid(
                    tuple(p),
                    tuple(float(v) for v in rng.uniform(12.0, 22.0, 3)),
                    tuple(float(a) for a in rng.uniform(0, 90, 3)),
                    _draw_lobes(rng, 3, 0.2),
                ),
                INJURY_CODES["bowel"],
                20.0,
                (_SOFT,),
                fat_only=True,
            )
        )
    return _BowelInjury(loop_index, thick_loop, window), lesions, center


def _in_free_fat(anat: Anatomy, p: np.ndarray, clearance: float) -> bool:
    """Whether a point lies in the peritoneal fat, ``clearance`` mm away from organs and gut."""
    x, y, z = (np.asarray(v) for v in p)
    cx, vb_y = anat.vertebra_xy
    hx, hy = anat.vertebra_half_axes
    vertebra = ((x - cx) / (hx + clearance)) ** 2 + ((y - vb_y) / (hy + clearance)) ** 2 < 1
    psoas = (np.abs(x - cx) < hx + 30.0 + clearance) & (y > vb_y - hy - clearance)
    if not _in_cavity(anat, x, y, z) or vertebra or psoas:
        return False
    organs = (*anat.liver, anat.spleen, anat.stomach, anat.bladder, *anat.kidneys)
    if any(_ellipsoid_s(e, x, y, z) < 1.0 + clearance / min(e.half_axes) for e in organs):
        return False
    for tube in (anat.colon, *anat.small_bowel, anat.aorta, anat.ivc, *anat.iliac_arteries):
        a, b = tube.points[:-1], tube.points[1:]
        d = b - a
        t = np.clip(np.einsum("ij,ij->i", p - a, d) / np.maximum((d * d).sum(axis=1), 1e-9), 0, 1)
        dist = np.linalg.norm(a + t[:, None] * d - p, axis=1)
        if (dist < tube.radius[:-1] + clearance).any():
            return False
    return True


def _plan_extravasation(
    anat: Anatomy,
    sites: Sequence[tuple[np.ndarray, tuple[int, ...]]],
    rng: np.random.Generator,
) -> list[_Blob]:
    """Contrast blush in or next to an injured organ, else in the mesentery or pelvis."""
    target = INJURY_CODES["extravasation"]
    hu = float(rng.uniform(280.0, 340.0))
    organ_sites = [s for s in sites if s[1]]
    blobs: list[_Blob] = []
    if organ_sites:
        site, codes = organ_sites[int(rng.integers(len(organ_sites)))]
        first = site + rng.normal(0.0, 4.0, 3)
        hosts: tuple[int, ...] = (*codes, _SOFT, _BOWEL)
        halo = False
    else:  # mesentery (near an injured loop) or pelvis
        yc = anat.back_y - anat.body_half_depth_posterior
        for attempt in range(60):
            if sites:
                first = sites[0][0] + _random_direction(rng) * rng.uniform(15.0, 30.0 + attempt)
            else:
                first = np.array(
                    [
                        anat.center_x + rng.uniform(-60.0, 60.0),
                        yc - rng.uniform(10.0, 60.0),
                        rng.uniform(anat.l1_top_z + 70.0, anat.s1_top_z),
                    ]
                )
            if _in_free_fat(anat, first, 4.0):
                break
        hosts = (_SOFT, _BOWEL)
        halo = True
    centers = [first]
    if rng.random() < 0.5:
        centers.append(first + _random_direction(rng) * rng.uniform(10.0, 18.0))
    for c in centers:
        half_axes = tuple(float(v) for v in rng.uniform(5.0, 8.0, 3))
        shape = Ellipsoid(
            tuple(c),
            half_axes,
            tuple(float(a) for a in rng.uniform(0, 90, 3)),
            _draw_lobes(rng, 2, 0.12),
        )
        if halo:
            big = tuple(2.2 * v for v in half_axes)
            blobs.append(
                _Blob(
                    Ellipsoid(tuple(c), big, shape.angles, _draw_lobes(rng, 3, 0.15)),
                    target,
                    float(rng.uniform(50.0, 60.0)),
                    (_SOFT,),
                    fat_only=True,
                )
            )
        blobs.append(_Blob(shape, target, hu, hosts))
    return blobs


def _paint_cleft(canvas: _Canvas, c: _Cleft) -> None:
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


def _paint_shatter(canvas: _Canvas, sh: _Shatter) -> None:
    """Paint a shattered, mottled hypodense region into its organ."""
    ext = sh.radius * (1.0 + sum(abs(lobe[5]) for lobe in sh.lobes)) + 1.0
    box = canvas.grid.box(sh.center - ext, sh.center + ext)
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    shape = Ellipsoid(tuple(sh.center), (sh.radius,) * 3, lobes=sh.lobes)
    mask = (_ellipsoid_s(shape, x, y, z) <= 1.0) & np.isin(canvas.organs[box], sh.organs)
    cx, cy, cz = sh.center.tolist()
    dx, dy, dz = x - cx, y - cy, z - cz
    hu = np.full(mask.shape, sh.hu, dtype=np.float32)
    for nx, ny, nz, freq, phase in sh.texture:
        hu += 7.0 * np.cos(freq * (nx * dx + ny * dy + nz * dz) + phase)
    canvas.paint(box, mask, hu, injury=sh.target)


def _organ_radius(
    anat: Anatomy, organ: str, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Normalised ellipsoid radius of an organ (``<= 1`` inside, ignoring clipping)."""
    if organ == "liver":
        return np.minimum(
            _ellipsoid_s(anat.liver[0], x, y, z), _ellipsoid_s(anat.liver[1], x, y, z)
        )
    if organ == "spleen":
        return _ellipsoid_s(anat.spleen, x, y, z)
    return _ellipsoid_s(anat.kidneys[0 if organ == "kidney_right" else 1], x, y, z)


def _paint_hematoma(canvas: _Canvas, anat: Anatomy, h: _Hematoma) -> None:
    """Paint a hematoma crescent: subcapsular rim inside, collection in the fat outside."""
    ext = h.radius + h.thickness + 2.0
    box = canvas.grid.box(h.center - ext, h.center + ext)
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    cx, cy, cz = h.center.tolist()
    d2 = ((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) * (1.0 / h.radius**2)
    thickness = h.thickness * np.sqrt(np.clip(1.0 - d2, 0.0, None))  # crescent: thick centre
    s = _organ_radius(anat, h.organ, x, y, z)
    scale = h.scale
    organ_box = np.isin(canvas.organs[box], h.organs)
    wall_gap = _halfwidth(anat, y, z, "cavity") - np.abs(x - anat.center_x)
    rim = organ_box & ((s > 1.0 - 0.5 * thickness / scale) | (wall_gap < 0.5 * thickness))
    outside = canvas.fat(box) & (s > 1.0) & (s < 1.0 + thickness / scale)
    outside &= (wall_gap > 0) & _below_diaphragm(anat, x, y, z)
    canvas.paint(box, (rim | outside) & (thickness > 0), h.hu, injury=h.target)


def _paint_blob(canvas: _Canvas, anat: Anatomy, b: _Blob) -> None:
    """Paint a blob over its host codes (or over peritoneal fat only)."""
    box, (x, y, z) = _ellipsoid_box(canvas, b.shape)
    if box is None:
        return
    mask = _ellipsoid_s(b.shape, x, y, z) <= 1.0
    if b.fat_only:
        mask &= canvas.fat(box) & _in_cavity(anat, x, y, z)
    else:
        mask &= np.isin(canvas.organs[box], b.hosts)
    canvas.paint(box, mask, b.hu, injury=b.target)


def _paint_lesions(canvas: _Canvas, anat: Anatomy, plan: _InjuryPlan) -> None:
    """Paint every planned lesion, in plan order."""
    for lesion in plan.lesions:
        if isinstance(lesion, _Cleft):
            _paint_cleft(canvas, lesion)
        elif isinstance(lesion, _Shatter):
            _paint_shatter(canvas, lesion)
        elif isinstance(lesion, _Hematoma):
            _paint_hematoma(canvas, anat, lesion)
        else:
            _paint_blob(canvas, anat, lesion)


# --------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True, eq=False)
class Phantom:
    """A rendered synthetic CT series.

    Attributes:
        hu: ``(D, H, W)`` int16 Hounsfield units, canonical orientation.
        organs: ``(D, H, W)`` uint8 organ codes (:data:`ORGAN_CODES`).
        injuries: ``(D, H, W)`` uint8 injury codes (:data:`INJURY_CODES`).
        labels: The patient's labels (consistent with ``injuries``).
        anatomy: The patient's anatomy.
        spacing: ``(dz, dy, dx)`` mm.
        z_offset_mm: Position of the top of the field of view in the patient frame, mm.
    """

    hu: np.ndarray
    organs: np.ndarray
    injuries: np.ndarray
    labels: InjuryLabels
    anatomy: Anatomy
    spacing: Vec3
    z_offset_mm: float = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``."""
        d, h, w = self.hu.shape
        return d, h, w


def render_volume(
    anatomy: Anatomy,
    labels: InjuryLabels,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    rng: np.random.Generator | None = None,
    z_offset_mm: float = 0.0,
    noise_hu: float = 12.0,
) -> Phantom:
    """Render a patient as a CT volume.

    Args:
        anatomy: The patient (:func:`draw_anatomy`).
        labels: Injuries to show.
        shape: ``(D, H, W)``.
        spacing: ``(dz, dy, dx)`` in mm; the field of view is ``shape * spacing`` mm, centred
            in-plane on the scanner isocentre and starting at ``z_offset_mm``.
        rng: Generator for the image noise; None seeds it from ``anatomy.seed`` (two renders
            of one patient then get the same noise).
        z_offset_mm: Craniocaudal position of the top of the field of view, mm (0: a few
            centimetres above the liver dome).
        noise_hu: Standard deviation of the Gaussian image noise, HU.

    Returns:
        The phantom: int16 HU and uint8 organ and injury maps, all ``(D, H, W)``.

    Raises:
        ValueError: On a bad shape, spacing or noise level.
    """
    shape3 = _check_shape(shape)
    spacing3 = _check_spacing(spacing)
    if not np.isfinite(noise_hu) or noise_hu < 0:
        raise ValueError(f"noise_hu must be a finite number >= 0; got {noise_hu}")
    if not isinstance(labels, InjuryLabels):
        raise TypeError(f"labels must be InjuryLabels; got {type(labels).__name__}")
    if rng is None:
        rng = np.random.default_rng([anatomy.seed, 3])

    canvas = _Canvas.empty(_Grid.make(shape3, spacing3, float(z_offset_mm)))
    plan = _plan_injuries(anatomy, labels)
    _paint_body(canvas, anatomy)
    _paint_table(canvas, anatomy)
    _paint_thorax(canvas, anatomy)
    _paint_back_muscles(canvas, anatomy)
    _paint_gut(canvas, anatomy, plan.bowel)
    _paint_liver(canvas, anatomy)
    _paint_spleen(canvas, anatomy)
    _paint_kidneys(canvas, anatomy)
    _paint_bladder(canvas, anatomy)
    _paint_vessels(canvas, anatomy)
    _paint_spine(canvas, anatomy)
    _paint_ribs(canvas, anatomy)
    _paint_pelvis(canvas, anatomy)
    _paint_lesions(canvas, anatomy, plan)
    hu = _finish(canvas.hu, rng, noise_hu)
    return Phantom(
        hu, canvas.organs, canvas.injuries, labels, anatomy, spacing3, float(z_offset_mm)
    )


def _finish(hu: np.ndarray, rng: np.random.Generator, noise_hu: float) -> np.ndarray:
    """Partial-volume blur, Gaussian noise, rounding to int16."""
    out = ndimage.gaussian_filter(hu, _BLUR_SIGMA_VOXELS, truncate=2.0, output=np.float32)
    if noise_hu > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise_hu)
    np.clip(out, -1024.0, 3071.0, out=out)
    np.rint(out, out=out)
    return out.astype(np.int16)


def make_phantom(
    seed_or_rng: int | np.random.Generator,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    prevalence: Mapping[str, Sequence[float]] = DEFAULT_PREVALENCE,
    labels: InjuryLabels | None = None,
    z_offset_mm: float = 0.0,
    noise_hu: float = 12.0,
) -> Phantom:
    """Draw a patient (anatomy and labels) and render it.

    The labels are always drawn (so the random stream does not depend on ``labels``); given
    ``labels`` replace them. The same seed with different ``labels`` therefore renders the
    same anatomy with the same noise.

    Args:
        seed_or_rng: Seed or generator.
        shape: ``(D, H, W)``.
        spacing: ``(dz, dy, dx)`` mm.
        prevalence: Class probabilities per target (:data:`DEFAULT_PREVALENCE`).
        labels: Labels to use instead of drawn ones.
        z_offset_mm: See :func:`render_volume`.
        noise_hu: See :func:`render_volume`.

    Returns:
        The phantom.
    """
    rng = (
        seed_or_rng
        if isinstance(seed_or_rng, np.random.Generator)
        else (np.random.default_rng(seed_or_rng))
    )
    anatomy = draw_anatomy(rng)
    drawn = draw_injury_labels(rng, prevalence)
    return render_volume(
        anatomy, labels if labels is not None else drawn, shape, spacing, rng, z_offset_mm, noise_hu
    )


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate ``(D, H, W)``."""
    if len(shape) != 3 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be three positive ints (D, H, W); got {shape}")
    d, h, w = (int(s) for s in shape)
    return d, h, w


def _check_spacing(spacing: Sequence[float]) -> Vec3:
    """Validate ``(dz, dy, dx)`` in mm."""
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive mm values (dz, dy, dx); got {spacing}")
    dz, dy, dx = (float(s) for s in spacing)
    return dz, dy, dx
