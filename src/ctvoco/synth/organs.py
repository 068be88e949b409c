"""Organs and vessels of a synthetic patient, placed in its body frame.

Each function draws one structure from the patient's generator; :func:`~ctvoco.synth.
anatomy.draw_anatomy` calls them in a fixed order. Organ sizes vary by about +-15% and
positions by about +-10 mm, on top of the body's own size.
"""

from __future__ import annotations

import numpy as np

from ctvoco.synth.body import Body, Draw, Skeleton
from ctvoco.synth.shapes import Ellipsoid, Tube, Vec3, draw_lobes, random_direction


def draw_heart(d: Draw, body: Body, skel: Skeleton) -> Ellipsoid:
    """The heart, resting on the diaphragm."""
    return Ellipsoid(
        tuple(
            np.array(
                [
                    body.center_x + 15.0,
                    body.yc - 0.35 * body.cav_ant,
                    min(skel.dome_r, skel.dome_l) - 45.0,
                ]
            )
            + d.jitter(8.0)
        ),
        d.size(65.0, 50.0, 55.0),
        (d.u(-20.0, 0.0), 0.0, 0.0),
    )


def draw_liver(d: Draw, body: Body, skel: Skeleton) -> tuple[Ellipsoid, Ellipsoid]:
    """Right and left liver lobes under the right dome."""
    cx, yc = body.center_x, body.yc
    right = Ellipsoid(
        tuple(
            np.array([cx - 0.5 * body.cav_a, yc + 0.05 * body.cav_post, skel.dome_r + 70.0])
            + d.jitter()
        ),
        d.size(68.0, 85.0, 78.0),
        (d.u(-10.0, 10.0), d.u(-8.0, 8.0), d.u(-8.0, 8.0)),
        draw_lobes(d.rng, 3, 0.05),
    )
    left = Ellipsoid(
        tuple(
            np.array([cx + 0.12 * body.cav_a, yc - 0.55 * body.cav_ant, skel.dome_r + 42.0])
            + d.jitter()
        ),
        d.size(58.0, 32.0, 40.0),
        (d.u(-20.0, 0.0), 0.0, d.u(-10.0, 10.0)),
        draw_lobes(d.rng, 2, 0.05),
    )
    return right, left


def draw_gallbladder(d: Draw, body: Body, skel: Skeleton) -> Ellipsoid | None:
    """The gallbladder under the liver, or None for one patient in five."""
    if d.rng.random() >= 0.8:
        return None
    return Ellipsoid(
        tuple(
            np.array(
                [
                    body.center_x - 0.3 * body.cav_a,
                    body.yc - 0.45 * body.cav_ant,
                    skel.dome_r + 112.0,
                ]
            )
            + d.jitter(6.0)
        ),
        d.size(14.0, 17.0, 32.0),
        (d.u(-30.0, 30.0), d.u(-15.0, 15.0), d.u(-25.0, 5.0)),
    )


def draw_spleen(d: Draw, body: Body, skel: Skeleton) -> tuple[Ellipsoid, Ellipsoid]:
    """The spleen along the left posterolateral wall, and the hilum carved out of it."""
    spleen = Ellipsoid(
        tuple(
            np.array(
                [
                    body.center_x + 0.64 * body.cav_a,
                    body.yc + 0.45 * body.cav_post,
                    skel.dome_l + 58.0,
                ]
            )
            + d.jitter()
        ),
        d.size(24.0, 55.0, 48.0),
        (d.u(25.0, 40.0), d.u(-10.0, 10.0), d.u(-15.0, 5.0)),
        draw_lobes(d.rng, 2, 0.05),
    )
    hilum = Ellipsoid(
        tuple(spleen.point((-1.35, 0.0, 0.0))),
        (spleen.half_axes[0] * 0.75, spleen.half_axes[1] * 0.6, spleen.half_axes[2] * 0.7),
        spleen.angles,
    )
    return spleen, hilum


def draw_kidneys(d: Draw, body: Body, skel: Skeleton) -> tuple[Ellipsoid, Ellipsoid]:
    """Right and left kidney; the liver pushes the right one down."""
    kidney_z_left = skel.l1_top + d.u(25.0, 40.0)
    kidney_z_right = kidney_z_left + d.u(8.0, 20.0)
    right = _draw_kidney(d, body, skel, -1.0, kidney_z_right, d.u(-38.0, -22.0))
    left = _draw_kidney(d, body, skel, 1.0, kidney_z_left, 180.0 + d.u(22.0, 38.0))
    return right, left


def _draw_kidney(
    d: Draw, body: Body, skel: Skeleton, side: float, kidney_z: float, yaw: float
) -> Ellipsoid:
    """One kidney: local +x (the hilum) faces anteromedially; the upper pole tilts medially."""
    return Ellipsoid(
        (
            body.center_x + side * (skel.vb_half[0] + d.u(40.0, 48.0)) + d.u(-5.0, 5.0),
            skel.vb_y + d.u(-5.0, 13.0),
            kidney_z,
        ),
        d.size(27.0, 22.0, 55.0),
        (yaw, d.u(-15.0, -5.0), 0.0),
    )


def draw_stomach(d: Draw, body: Body, skel: Skeleton) -> Ellipsoid:
    """The stomach under the left dome."""
    return Ellipsoid(
        tuple(
            np.array(
                [body.center_x + 0.4 * body.cav_a, body.yc - 0.2 * body.cav_ant, skel.dome_l + 55.0]
            )
            + d.jitter()
        ),
        d.size(38.0, 36.0, 55.0),
        (d.u(20.0, 40.0), 0.0, d.u(-20.0, 0.0)),
        draw_lobes(d.rng, 2, 0.04),
    )


def draw_bladder(d: Draw, body: Body, skel: Skeleton) -> Ellipsoid:
    """The urinary bladder in the pelvis, filled to a random degree."""
    return Ellipsoid(
        tuple(
            np.array([body.center_x, body.yc - 0.35 * body.cav_ant, skel.s1_top + 80.0])
            + d.jitter(6.0)
        ),
        tuple(float(v) * d.u(0.6, 1.2) for v in (45.0, 35.0, 35.0)),
    )


def draw_arteries(d: Draw, body: Body, skel: Skeleton) -> tuple[Tube, tuple[Tube, Tube]]:
    """The descending aorta down to its bifurcation, and the right and left iliac arteries."""
    cx, vb_y = body.center_x, skel.vb_y
    aorta_radius = d.u(9.5, 12.5) * d.organ_scale
    aorta_x = cx + d.u(8.0, 15.0)
    aorta_y = vb_y - skel.vb_half[1] - aorta_radius - d.u(1.0, 4.0)
    bifurcation_z = skel.l1_top + 3.3 * skel.pitch
    aorta = Tube.vessel(
        np.array(
            [
                [cx + 24.0, vb_y - 2.0, -250.0],
                [cx + 22.0, vb_y - 4.0, min(skel.dome_r, skel.dome_l) - 10.0],
                [aorta_x, aorta_y, skel.dome_r + 60.0],
                [aorta_x, aorta_y, bifurcation_z],
            ]
        ),
        np.array([aorta_radius, aorta_radius, aorta_radius, 0.9 * aorta_radius]),
    )
    right, left = (
        Tube.vessel(
            np.array(
                [
                    [aorta_x, aorta_y, bifurcation_z - 5.0],
                    [cx + side * 35.0, aorta_y + 5.0, bifurcation_z + 55.0],
                    [cx + side * 65.0, aorta_y - 5.0, bifurcation_z + 130.0],
                    [cx + side * 80.0, aorta_y - 45.0, bifurcation_z + 230.0],
                ]
            ),
            0.55 * aorta_radius,
        )
        for side in (-1.0, 1.0)
    )
    return aorta, (right, left)


def draw_ivc(d: Draw, body: Body, skel: Skeleton) -> tuple[Tube, Vec3]:
    """The inferior vena cava, and the point where the hepatic veins join it."""
    ivc_x = body.center_x - d.u(18.0, 26.0)
    ivc_y = skel.vb_y - skel.vb_half[1] - d.u(9.0, 13.0)
    bifurcation_z = skel.l1_top + 3.3 * skel.pitch
    ivc = Tube.vessel(
        np.array(
            [
                [ivc_x, ivc_y - 8.0, -250.0],
                [ivc_x - 2.0, ivc_y - 6.0, skel.dome_r + 20.0],
                [ivc_x, ivc_y, skel.l1_top],
                [ivc_x, ivc_y, bifurcation_z + 10.0],
                [body.center_x - 35.0, ivc_y + 8.0, bifurcation_z + 70.0],
            ]
        ),
        d.u(9.0, 12.0),
    )
    return ivc, (ivc_x, ivc_y, skel.dome_r + 25.0)


def draw_liver_vessels(
    rng: np.random.Generator, right: Ellipsoid, left: Ellipsoid, ivc_top: Vec3
) -> tuple[Tube, ...]:
    """Portal branches from the hilum and hepatic veins towards the IVC, tapering."""
    hilum = right.point((0.55, -0.1, 0.3))
    vessels = []
    for i in range(7):
        lobe = left if i >= 5 else right
        end = lobe.point(random_direction(rng) * rng.uniform(0.55, 0.85))
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
