"""Geometry of solid-organ injuries: lacerations, shattered parenchyma, hematomas."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ctvoco.synth.anatomy import Anatomy
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
    anat: Anatomy, organ: str, grade: int, rng: np.random.Generator
) -> tuple[list[Cleft | Shatter | Hematoma | Blob], np.ndarray]:
    """Low grade: one or two lacerations. High grade: shattered region, clefts, hematoma."""
    target = INJURY_CODES["kidney" if organ.startswith("kidney") else organ]
    kidney = organ.startswith("kidney")
    e = _organ_ellipsoid(anat, organ, grade, rng)
    codes = ORGAN_TARGET_CODES[organ]
    lesions: list[Cleft | Shatter | Hematoma | Blob] = []
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
    lobes = draw_lobes(rng, 3, 0.15)
    radius = _shatter_radius(anat, organ, center, lobes, float(rng.uniform(0.35, 0.55)), rng)
    texture = tuple(
        (*random_direction(rng), float(rng.uniform(0.12, 0.35)), float(rng.uniform(0, 2 * np.pi)))
        for _ in range(3)
    )
    lesions.append(
        Shatter(codes, target, center, radius, lobes, texture, float(rng.uniform(38.0, 48.0)))
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
        Hematoma(
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
    points = points[organ_contains(anat, organ, points[:, 0], points[:, 1], points[:, 2])]
    if len(points) == 0:
        return float(np.mean(shapes[0].half_axes))

    def covered(radius: float) -> float:
        ball = Ellipsoid(tuple(center), (radius, radius, radius), lobes=lobes)
        return float(np.mean(ellipsoid_s(ball, points[:, 0], points[:, 1], points[:, 2]) <= 1))

    low, high = 1.0, 250.0
    for _ in range(20):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if covered(mid) < fraction else (low, mid)
    return 0.5 * (low + high)
