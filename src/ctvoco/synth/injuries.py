"""From a patient's labels to its lesions: organ, bowel and extravasation injuries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctvoco.labels import TARGETS
from ctvoco.synth.anatomy import Anatomy
from ctvoco.synth.grades import CLOT_HU, EXTRAVASATION_FACTOR
from ctvoco.synth.labels import INJURY_CODES, InjuryLabels
from ctvoco.synth.lesions import (
    ORGAN_TARGET_CODES,
    Blob,
    BowelInjury,
    Cleft,
    Hematoma,
    InjuryPlan,
    Shatter,
)
from ctvoco.synth.organ_injuries import plan_organ_injury
from ctvoco.synth.regions import in_cavity
from ctvoco.synth.shapes import Ellipsoid, Tube, draw_lobes, ellipsoid_s, random_direction
from ctvoco.synth.tissues import BOWEL, SOFT


def plan_injuries(anat: Anatomy, labels: InjuryLabels) -> InjuryPlan:
    """Injury geometry, deterministic given ``anat.seed`` and the labels."""

    def rng_for(target: str) -> np.random.Generator:
        return np.random.default_rng([anat.seed, 17, TARGETS.index(target)])

    lesions: list[Cleft | Shatter | Hematoma | Blob] = []
    sites: list[tuple[np.ndarray, tuple[int, ...]]] = []
    grades: dict[str, int] = {}
    for target in ("liver", "spleen", "kidney"):
        grade = getattr(labels, target)
        if grade == 0:
            continue
        rng = rng_for(target)
        organ = target
        if target == "kidney":
            organ = ("kidney_right", "kidney_left")[int(rng.integers(2))]
        organ_lesions, site, grades[target] = plan_organ_injury(anat, organ, grade, rng)
        lesions.extend(organ_lesions)
        sites.append((site, ORGAN_TARGET_CODES[organ]))
    bowel = None
    if labels.bowel:
        bowel, bowel_lesions, site = _plan_bowel_injury(anat, rng_for("bowel"))
        lesions.extend(bowel_lesions)
        sites.append((site, ()))
    if labels.extravasation:
        lesions.extend(_plan_extravasation(anat, sites, rng_for("extravasation")))
    return InjuryPlan(tuple(lesions), bowel, grades)


def _plan_bowel_injury(
    anat: Anatomy, rng: np.random.Generator
) -> tuple[BowelInjury, list[Blob], np.ndarray]:
    """A thick-walled segment of one loop, extraluminal gas, free fluid between loops."""
    injury, vertex = _thick_segment(anat, rng)
    loop = anat.small_bowel[injury.loop]
    lesions = _extraluminal_gas(anat, loop, injury.window, rng)
    lesions += _free_fluid(anat, loop, injury.window, rng)
    return injury, lesions, loop.points[vertex]


def _thick_segment(anat: Anatomy, rng: np.random.Generator) -> tuple[BowelInjury, int]:
    """A loop of the mid abdomen whose wall thickens around one vertex (returned too)."""
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
    return BowelInjury(loop_index, thick_loop, window), vertex


def _extraluminal_gas(
    anat: Anatomy, loop: Tube, window: tuple[int, int], rng: np.random.Generator
) -> list[Blob]:
    """Small gas bubbles in the fat next to the injured segment."""
    n = len(loop.points)
    bubbles: list[Blob] = []
    for _ in range(int(rng.integers(4, 7))):
        r = float(rng.uniform(3.5, 5.0))
        for attempt in range(60):
            i = int(rng.integers(window[0], window[1] + 1))
            tangent = loop.points[min(i + 1, n - 1)] - loop.points[max(i - 1, 0)]
            side = np.cross(tangent, random_direction(rng))
            side /= max(float(np.linalg.norm(side)), 1e-6)
            gap = rng.uniform(1.0, 5.0 + 0.3 * attempt)
            p = loop.points[i] + side * (loop.radius[i] + r + gap)
            if _in_free_fat(anat, p, r):
                break
        bubbles.append(
            Blob(
                Ellipsoid(tuple(p), (r, r, 1.3 * r)),
                INJURY_CODES["bowel"],
                -950.0,
                (SOFT,),
                fat_only=True,
            )
        )
    return bubbles


def _free_fluid(
    anat: Anatomy, loop: Tube, window: tuple[int, int], rng: np.random.Generator
) -> list[Blob]:
    """Fluid pockets in the dependent pelvis and between the loops near the injury."""
    n = len(loop.points)
    cx, vb_y = anat.vertebra_xy
    pelvic_pocket = np.array(
        [cx + rng.uniform(-30.0, 30.0), vb_y - 20.0, anat.s1_top_z + rng.uniform(20.0, 50.0)]
    )
    pockets: list[Blob] = []
    for k in range(int(rng.integers(4, 6))):
        for _ in range(30):
            if k == 0:  # fluid collects in the dependent pelvis
                p = pelvic_pocket + rng.uniform(-15.0, 15.0, 3)
            else:
                i = int(rng.integers(max(0, window[0] - 6), min(n, window[1] + 7)))
                p = loop.points[i] + random_direction(rng) * (
                    loop.radius[i] + rng.uniform(5.0, 20.0)
                )
            if _in_free_fat(anat, p, 0.0):
                break
        pockets.append(
            Blob(
                Ellipsoid(
                    tuple(p),
                    tuple(float(v) for v in rng.uniform(12.0, 22.0, 3)),
                    tuple(float(a) for a in rng.uniform(0, 90, 3)),
                    draw_lobes(rng, 3, 0.2),
                ),
                INJURY_CODES["bowel"],
                20.0,
                (SOFT,),
                fat_only=True,
            )
        )
    return pockets


def _in_free_fat(anat: Anatomy, p: np.ndarray, clearance: float) -> bool:
    """Whether a point lies in the peritoneal fat, ``clearance`` mm away from organs and gut."""
    x, y, z = (np.asarray(v) for v in p)
    cx, vb_y = anat.vertebra_xy
    hx, hy = anat.vertebra_half_axes
    vertebra = ((x - cx) / (hx + clearance)) ** 2 + ((y - vb_y) / (hy + clearance)) ** 2 < 1
    psoas = (np.abs(x - cx) < hx + 30.0 + clearance) & (y > vb_y - hy - clearance)
    if not in_cavity(anat, x, y, z) or vertebra or psoas:
        return False
    organs = (*anat.liver, anat.spleen, anat.stomach, anat.bladder, *anat.kidneys)
    if any(ellipsoid_s(e, x, y, z) < 1.0 + clearance / min(e.half_axes) for e in organs):
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
) -> list[Blob]:
    """Contrast blush in or next to an injured organ, else in the mesentery or pelvis."""
    target = INJURY_CODES["extravasation"]
    hu = anat.aorta_hu * float(rng.uniform(*EXTRAVASATION_FACTOR))
    organ_sites = [s for s in sites if s[1]]
    blobs: list[Blob] = []
    if organ_sites:
        site, codes = organ_sites[int(rng.integers(len(organ_sites)))]
        first = site + rng.normal(0.0, 4.0, 3)
        hosts: tuple[int, ...] = (*codes, SOFT, BOWEL)
        halo = False
    else:  # mesentery (near an injured loop) or pelvis
        yc = anat.back_y - anat.body_half_depth_posterior
        for attempt in range(60):
            if sites:
                first = sites[0][0] + random_direction(rng) * rng.uniform(15.0, 30.0 + attempt)
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
        hosts = (SOFT, BOWEL)
        halo = True
    centers = [first]
    if rng.random() < 0.5:
        centers.append(first + random_direction(rng) * rng.uniform(10.0, 18.0))
    for c in centers:
        half_axes = tuple(float(v) for v in rng.uniform(5.0, 8.0, 3))
        shape = Ellipsoid(
            tuple(c),
            half_axes,
            tuple(float(a) for a in rng.uniform(0, 90, 3)),
            draw_lobes(rng, 2, 0.12),
        )
        if halo:
            big = tuple(2.2 * v for v in half_axes)
            blobs.append(
                Blob(
                    Ellipsoid(tuple(c), big, shape.angles, draw_lobes(rng, 3, 0.15)),
                    target,
                    float(rng.uniform(*CLOT_HU)),
                    (SOFT,),
                    fat_only=True,
                )
            )
        blobs.append(Blob(shape, target, hu, hosts))
    return blobs
