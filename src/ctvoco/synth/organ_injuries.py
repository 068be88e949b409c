"""Geometry of solid-organ injuries by AAST grade: lacerations, disrupted parenchyma, hematomas."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ctvoco.synth.anatomy import Anatomy
from ctvoco.synth.grades import (
    CLOT_HU,
    GRADE_SHAPES,
    GRADES_OF_LABEL,
    UNCLOTTED_HU,
    GradeShape,
    below_parenchyma,
    cap_radius,
    draw_grade,
    organ_kind,
)
from ctvoco.synth.labels import INJURY_CODES
from ctvoco.synth.lesions import ORGAN_TARGET_CODES, Blob, Cleft, Hematoma, Shatter
from ctvoco.synth.regions import organ_contains
from ctvoco.synth.shapes import Ellipsoid, Lobe, draw_lobes, ellipsoid_s, random_direction


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
        p = e.point(random_direction(rng) * rng.uniform(*radius))
        pts = p[None, :] if probe is None else np.vstack([p[None, :], probe(p)])
        inside = organ_contains(anat, organ, pts[:, 0], pts[:, 1], pts[:, 2])
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
        out = random_direction(rng)
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
) -> Cleft:
    """A laceration in ``organ`` (hosted by ``e``), at ``center`` or a sampled point."""

    def probe(p: np.ndarray) -> np.ndarray:
        basis = _cleft_basis(p, np.asarray(e.center), np.random.default_rng(0))
        return np.stack([p - 0.3 * length * basis[0], p + 0.2 * length * basis[0]])

    if center is None:
        center = _sample_in_organ(anat, organ, e, rng, radius, probe)
    basis = _cleft_basis(center, np.asarray(e.center), rng)
    return Cleft(
        organs=ORGAN_TARGET_CODES[organ],
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


def plan_organ_injury(
    anat: Anatomy, organ: str, label: int, rng: np.random.Generator, grade: int | None = None
) -> tuple[list[Cleft | Shatter | Hematoma | Blob], np.ndarray, int]:
    """The lesions of an injured organ, sized by an AAST grade drawn from its label.

    Low grade (AAST I-III): lacerations from the capsule to the grade's depth and, for half
    of the injuries (every kidney grade I), a subcapsular hematoma over the grade's share of
    the surface. High grade (IV-V): a disrupted region covering the grade's share of the
    organ, deep lacerations through it and a perihepatic / perisplenic / perirenal clot.

    Args:
        anat: The patient, in the series' contrast phase.
        organ: ``liver``, ``spleen``, ``kidney_right`` or ``kidney_left``.
        label: The label class, 1 (low grade) or 2 (high grade).
        rng: Generator of the injury's geometry.
        grade: The AAST grade (one of the label's); None draws it from the label.

    Returns:
        The lesions, the injury's site (where an extravasation would be) and the grade.
    """
    kind = organ_kind(organ)
    drawn = draw_grade(label, rng)
    grade = drawn if grade is None else grade
    if grade not in dict(GRADES_OF_LABEL[label]):
        raise ValueError(f"AAST grade {grade} is not a grade of label class {label}")
    shape = GRADE_SHAPES[kind][grade]
    e = _organ_ellipsoid(anat, organ, label, rng)
    plan = _low_grade if shape.disrupted_share is None else _high_grade
    lesions, site = plan(anat, organ, e, shape, rng)
    return lesions, site, grade


def _low_grade(
    anat: Anatomy, organ: str, e: Ellipsoid, shape: GradeShape, rng: np.random.Generator
) -> tuple[list[Cleft | Shatter | Hematoma | Blob], np.ndarray]:
    """Lacerations from the capsule and, for half of them, a subcapsular hematoma."""
    kind = organ_kind(organ)
    target = INJURY_CODES[kind]
    parenchyma = _parenchyma_hu(anat, kind)
    lesions: list[Cleft | Shatter | Hematoma | Blob] = []
    for _ in range(_count(shape, rng)):
        assert shape.laceration_depth is not None
        lesions.append(
            _laceration(
                anat,
                organ,
                e,
                rng,
                target=target,
                depth=float(rng.uniform(*shape.laceration_depth)),
                hu=below_parenchyma(float(rng.uniform(*UNCLOTTED_HU)), parenchyma),
            )
        )
    if shape.subcapsular_share is not None and (not lesions or rng.random() < 0.5):
        point, _ = _surface_point(anat, organ, e, rng, depth=2.0)
        radius = cap_radius(float(rng.uniform(*shape.subcapsular_share)), e.half_axes)
        lesions.append(_hematoma(anat, organ, e, point, radius, (4.0, 8.0), rng))
    first = lesions[0]
    assert isinstance(first, Cleft | Hematoma)
    return lesions, np.asarray(first.center, dtype=float)


def _high_grade(
    anat: Anatomy, organ: str, e: Ellipsoid, shape: GradeShape, rng: np.random.Generator
) -> tuple[list[Cleft | Shatter | Hematoma | Blob], np.ndarray]:
    """A disrupted region, deep lacerations through it and a clot around the organ."""
    assert shape.disrupted_share is not None and shape.laceration_depth is not None
    kind = organ_kind(organ)
    target, codes = INJURY_CODES[kind], ORGAN_TARGET_CODES[organ]
    parenchyma = _parenchyma_hu(anat, kind)
    lesions: list[Cleft | Shatter | Hematoma | Blob] = []
    center = _sample_in_organ(anat, organ, e, rng, (0.3, 0.6))
    lobes = draw_lobes(rng, 3, 0.15)
    share = float(rng.uniform(*shape.disrupted_share))
    radius = _shatter_radius(anat, organ, e, center, lobes, share, rng)
    texture = tuple(
        (*random_direction(rng), float(rng.uniform(0.12, 0.35)), float(rng.uniform(0, 2 * np.pi)))
        for _ in range(3)
    )
    shatter_hu = below_parenchyma(float(rng.uniform(38.0, 48.0)), parenchyma)
    lesions.append(Shatter(codes, target, center, radius, lobes, texture, shatter_hu))
    for _ in range(_count(shape, rng)):
        lesions.append(
            _make_cleft(
                anat,
                organ,
                e,
                rng,
                target=target,
                length=float(rng.uniform(*shape.laceration_depth)),
                half_height=float(rng.uniform(10.0, 18.0)),
                hu=below_parenchyma(float(rng.uniform(20.0, 30.0)), parenchyma),
                radius=(0.3, 0.6),
                center=center + rng.normal(0.0, 0.25 * radius, 3),
            )
        )
    local = np.asarray(e.rotation.T @ (center - np.asarray(e.center))) / np.asarray(e.half_axes)
    surface = e.point(local / max(np.linalg.norm(local), 1e-6))
    lesions.append(_hematoma(anat, organ, e, surface, 1.4 * radius, (10.0, 16.0), rng))
    return lesions, center


def _count(shape: GradeShape, rng: np.random.Generator) -> int:
    """A number of lacerations in the grade's inclusive range."""
    return int(rng.integers(shape.lacerations[0], shape.lacerations[1] + 1))


def _hematoma(
    anat: Anatomy,
    organ: str,
    e: Ellipsoid,
    center: np.ndarray,
    radius: float,
    thickness: tuple[float, float],
    rng: np.random.Generator,
) -> Hematoma:
    """A clot crescent of ``radius`` mm around a surface point of ``organ`` (hosted by
    ``e``), its thickness drawn from ``thickness`` (mm), kept darker than the parenchyma."""
    kind = organ_kind(organ)
    return Hematoma(
        organ,
        ORGAN_TARGET_CODES[organ],
        INJURY_CODES[kind],
        center,
        radius,
        min(e.half_axes),
        float(rng.uniform(*thickness)),
        below_parenchyma(float(rng.uniform(*CLOT_HU)), _parenchyma_hu(anat, kind)),
    )


def _parenchyma_hu(anat: Anatomy, kind: str) -> float:
    """Enhanced parenchyma HU of an organ kind in the anatomy's phase."""
    return {"liver": anat.liver_hu, "spleen": anat.spleen_hu}.get(kind, anat.kidney_cortex_hu)


def _surface_point(
    anat: Anatomy, organ: str, e: Ellipsoid, rng: np.random.Generator, depth: float
) -> tuple[np.ndarray, np.ndarray]:
    """A point of the organ's outer surface on ``e`` and the outward normal there.

    The point is on the organ's real surface (not inside another liver lobe or at a hilum):
    ``depth`` mm inwards is organ, 2 mm outwards is not.
    """
    r = e.rotation
    inverse_square = np.diag(1.0 / np.asarray(e.half_axes) ** 2)
    fallback = None
    steps = 0.5 * np.arange(13)[:, None]  # the parenchyma may start inside ``e`` (kidney)
    for _ in range(400):
        point = e.point(random_direction(rng))
        normal = r @ inverse_square @ r.T @ (point - np.asarray(e.center))
        normal /= np.linalg.norm(normal)
        ray = point - steps * normal
        hits = np.flatnonzero(organ_contains(anat, organ, ray[:, 0], ray[:, 1], ray[:, 2]))
        if not len(hits):
            continue
        point = ray[hits[0]]
        probes = np.stack([point - 1.0 * normal, point - depth * normal, point + 2.0 * normal])
        inside = organ_contains(anat, organ, probes[:, 0], probes[:, 1], probes[:, 2])
        if inside[0] and inside[1] and not inside[2]:
            return point, normal
        if fallback is None and inside[0]:
            fallback = (point, normal)
    if fallback is not None:
        return fallback
    point = e.point(np.array([1.0, 0.0, 0.0]))
    return point, (point - np.asarray(e.center)) / np.linalg.norm(point - np.asarray(e.center))


def _laceration(
    anat: Anatomy,
    organ: str,
    e: Ellipsoid,
    rng: np.random.Generator,
    *,
    target: int,
    depth: float,
    hu: float,
) -> Cleft:
    """A laceration from the capsule ``depth`` mm into the organ, along the surface normal."""
    point, normal = _surface_point(anat, organ, e, rng, depth)
    up = np.array([0.0, 0.0, 1.0]) + rng.normal(0.0, 0.25, 3)
    up -= (up @ normal) * normal
    up /= np.linalg.norm(up)
    basis = np.stack([normal, np.cross(up, normal), up])
    return Cleft(
        organs=ORGAN_TARGET_CODES[organ],
        target=target,
        center=point - 0.5 * depth * normal,
        basis=basis,
        length=depth,
        half_width=float(rng.uniform(1.5, 3.0)),
        half_height=float(np.clip(rng.uniform(0.4, 0.7) * depth, 4.0, 14.0)),
        wobble=(
            float(rng.uniform(0.3, 1.0)),
            float(rng.uniform(0.15, 0.35)),
            float(rng.uniform(0, 2 * np.pi)),
        ),
        hu=hu,
    )


def _shatter_radius(
    anat: Anatomy,
    organ: str,
    e: Ellipsoid,
    center: np.ndarray,
    lobes: tuple[Lobe, ...],
    fraction: float,
    rng: np.random.Generator,
) -> float:
    """Radius (mm) of a lobulated ball at ``center`` covering ``fraction`` of the organ
    within its host ellipsoid ``e`` (for the liver: of the injured lobe).

    Monte Carlo over points of the organ, then bisection on the radius.
    """
    extent = e.extent()
    points = rng.uniform(np.asarray(e.center) - extent, np.asarray(e.center) + extent, (8000, 3))
    x, y, z = points.T
    points = points[organ_contains(anat, organ, x, y, z) & (ellipsoid_s(e, x, y, z) <= 1.0)]
    if len(points) == 0:
        return float(np.mean(e.half_axes))

    def covered(radius: float) -> float:
        ball = Ellipsoid(tuple(center), (radius, radius, radius), lobes=lobes)
        return float(np.mean(ellipsoid_s(ball, points[:, 0], points[:, 1], points[:, 2]) <= 1))

    low, high = 1.0, 250.0
    for _ in range(20):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if covered(mid) < fraction else (low, mid)
    return 0.5 * (low + high)
