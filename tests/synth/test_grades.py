"""Tests of the AAST grades behind the labels (ctvoco.synth.grades) and the lesions they size."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.synth.anatomy import draw_anatomy
from ctvoco.synth.grades import (
    CLOT_CONTRAST_HU,
    GRADE_SHAPES,
    GRADES_OF_LABEL,
    cap_radius,
    draw_grade,
    organ_kind,
)
from ctvoco.synth.lesions import Cleft, Hematoma, Shatter
from ctvoco.synth.organ_injuries import plan_organ_injury
from ctvoco.synth.regions import organ_contains
from ctvoco.synth.shapes import Ellipsoid, ellipsoid_s, random_direction

ORGANS = ("liver", "spleen", "kidney_left", "kidney_right")


def plan(organ: str, grade: int, seed: int, phase: str = "portal_venous"):
    anatomy = draw_anatomy(np.random.default_rng(seed)).in_phase(phase)
    label = 1 if grade <= 3 else 2
    lesions, _, drawn = plan_organ_injury(
        anatomy, organ, label, np.random.default_rng([seed, grade]), grade=grade
    )
    assert drawn == grade
    return anatomy, lesions


def test_grades_follow_the_label_split():
    rng = np.random.default_rng(0)
    low = np.array([draw_grade(1, rng) for _ in range(4000)])
    high = np.array([draw_grade(2, rng) for _ in range(4000)])
    for label, draws in ((1, low), (2, high)):
        for grade, p in GRADES_OF_LABEL[label]:
            assert np.mean(draws == grade) == pytest.approx(p, abs=0.03)
    assert set(low) == {1, 2, 3} and set(high) == {4, 5}
    with pytest.raises(ValueError, match="not 0"):
        draw_grade(0, rng)


def test_a_grade_outside_the_label_is_refused():
    anatomy = draw_anatomy(np.random.default_rng(0))
    with pytest.raises(ValueError, match="grade 4 is not a grade of label class 1"):
        plan_organ_injury(anatomy, "liver", 1, np.random.default_rng(0), grade=4)


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("grade", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lacerations_reach_their_grades_depth_from_the_capsule(organ, grade, seed):
    anatomy, lesions = plan(organ, grade, seed)
    shape = GRADE_SHAPES[organ_kind(organ)][grade]
    clefts = [c for c in lesions if isinstance(c, Cleft)]
    low, high = shape.lacerations
    assert low <= len(clefts) <= high
    if shape.laceration_depth is None:  # kidney grade I: hematoma without laceration
        assert any(isinstance(h, Hematoma) for h in lesions)
        return
    for c in clefts:
        assert shape.laceration_depth[0] <= c.length <= shape.laceration_depth[1]
        normal = c.basis[0]
        surface = c.center + 0.5 * c.length * normal
        probes = np.stack([surface - 1.0 * normal, c.center - 0.45 * c.length * normal])
        inside = organ_contains(anatomy, organ, *probes.T)
        outside = organ_contains(anatomy, organ, *(surface + 2.0 * normal)[:, None])
        # The laceration opens at the capsule and its deep end lies in the organ.
        assert inside.all() and not outside.any()
    # Grade I and II stay under 1 cm and 3 cm (liver, spleen); grade III goes deeper.
    depths = [c.length for c in clefts]
    if organ_kind(organ) != "kidney":
        assert max(depths) < (10.0, 30.0, 46.0)[grade - 1]
        assert min(depths) > (0.0, 10.0, 30.0)[grade - 1]


def test_a_cap_covers_its_share_of_a_sphere():
    rng = np.random.default_rng(0)
    points = np.stack([random_direction(rng) for _ in range(20000)]) * 50.0
    center = np.array([0.0, 0.0, 50.0])
    for share in (0.05, 0.3, 0.6):
        r = cap_radius(share, (50.0, 50.0, 50.0))
        covered = np.mean(np.linalg.norm(points - center, axis=1) <= r)
        assert covered == pytest.approx(share, abs=0.015)


@pytest.mark.parametrize("organ", ["liver", "spleen", "kidney_left"])
@pytest.mark.parametrize("grade", [1, 2, 3])
def test_subcapsular_hematomas_cover_their_grades_share_of_the_surface(organ, grade):
    low, high = GRADE_SHAPES[organ_kind(organ)][grade].subcapsular_share
    seen = 0
    for seed in range(16):
        anatomy, lesions = plan(organ, grade, seed)
        hosts = {"liver": anatomy.liver, "spleen": (anatomy.spleen,)}.get(
            organ, (anatomy.kidneys[1],)
        )
        for h in (h for h in lesions if isinstance(h, Hematoma)):
            # The share of its host's surface (for the liver: one of its lobes).
            shares = [_share(h.radius, e.half_axes) for e in hosts]
            assert any(low - 1e-6 <= share <= high + 1e-6 for share in shares)
            seen += 1
    assert seen >= 2


def _share(radius: float, half_axes: tuple[float, float, float]) -> float:
    """Inverse of cap_radius: the surface share a cap of ``radius`` covers."""
    return radius**2 / cap_radius(1.0, half_axes) ** 2


@pytest.mark.parametrize("organ", ["liver", "spleen", "kidney_right"])
@pytest.mark.parametrize("grade", [4, 5])
def test_high_grades_disrupt_their_share_of_the_organ(organ, grade):
    anatomy, lesions = plan(organ, grade, 1)
    (shatter,) = [s for s in lesions if isinstance(s, Shatter)]
    low, high = GRADE_SHAPES[organ_kind(organ)][grade].disrupted_share
    host = {"liver": anatomy.liver, "spleen": (anatomy.spleen,)}.get(organ, (anatomy.kidneys[0],))
    e = min(host, key=lambda e: float(ellipsoid_s(e, *shatter.center[:, None])[0]))
    rng = np.random.default_rng(5)
    extent = e.extent()
    points = rng.uniform(np.asarray(e.center) - extent, np.asarray(e.center) + extent, (20000, 3))
    x, y, z = points.T
    points = points[organ_contains(anatomy, organ, x, y, z) & (ellipsoid_s(e, x, y, z) <= 1)]
    ball = Ellipsoid(tuple(shatter.center), (shatter.radius,) * 3, lobes=shatter.lobes)
    covered = np.mean(ellipsoid_s(ball, *points.T) <= 1)
    assert low - 0.04 <= covered <= high + 0.04


@pytest.mark.parametrize("grade", [1, 2, 3, 4, 5])
def test_blood_stays_darker_than_the_arterial_liver(grade):
    anatomy, lesions = plan("liver", grade, 0, phase="arterial")
    for lesion in lesions:
        assert lesion.hu <= anatomy.liver_hu - CLOT_CONTRAST_HU


def test_body_habitus_varies_the_fat_several_fold():
    lateral = [draw_anatomy(np.random.default_rng(s)).fat_thickness[0] for s in range(20)]
    assert max(lateral) / min(lateral) > 3.0
