"""Painting an anatomy into a canvas, structure by structure, in anatomical order."""

from __future__ import annotations

import numpy as np

from ctvoco.synth.anatomy import Anatomy
from ctvoco.synth.canvas import Canvas, ellipsoid_box, paint_tube
from ctvoco.synth.lesions import BowelInjury
from ctvoco.synth.regions import (
    DIAPHRAGM_MM,
    DOME_DEPTH,
    below_diaphragm,
    diaphragm_z,
    halfwidth,
    in_cavity,
    kidney_sinus,
)
from ctvoco.synth.shapes import Ellipsoid, ellipsoid_s, local_coords
from ctvoco.synth.tissues import (
    AIR_HU,
    AORTA,
    BONE,
    BONE_PLATE_HU,
    BOWEL,
    BOWEL_WALL_HU,
    CANCELLOUS_HU,
    CORTICAL_HU,
    CSF_HU,
    DISC_HU,
    FLUID_HU,
    KIDNEY_L,
    KIDNEY_R,
    LIVER,
    LUNG,
    LUNG_HU,
    SINUS_FAT_HU,
    SKIN_HU,
    SOFT,
    SPLEEN,
    STOOL_HU,
    TABLE,
    TABLE_CORE_HU,
    TABLE_SHELL_HU,
)


def paint_anatomy(canvas: Canvas, anat: Anatomy, bowel: BowelInjury | None) -> None:
    """Paint every structure of ``anat``, in anatomical order (later ones paint over earlier).

    Args:
        canvas: The volume being painted (starts as air).
        anat: The patient.
        bowel: The injured small bowel loop (painted with its thick wall), or None.
    """
    _paint_body(canvas, anat)
    _paint_table(canvas, anat)
    _paint_thorax(canvas, anat)
    _paint_back_muscles(canvas, anat)
    _paint_gut(canvas, anat, bowel)
    _paint_liver(canvas, anat)
    _paint_spleen(canvas, anat)
    _paint_kidneys(canvas, anat)
    _paint_bladder(canvas, anat)
    _paint_vessels(canvas, anat)
    _paint_spine(canvas, anat)
    _paint_ribs(canvas, anat)
    _paint_pelvis(canvas, anat)


def _paint_body(canvas: Canvas, anat: Anatomy) -> None:
    """Skin, subcutaneous fat, muscle wall and (visceral fat in) the cavity."""
    grid = canvas.grid
    y = grid.y[None, :, None]
    z = grid.z[:, None, None]
    ax = np.abs(grid.x - anat.center_x)[None, None, :]
    layer = np.zeros(canvas.hu.shape, dtype=np.uint8)
    for name in ("skin", "dermis", "fat", "cavity"):
        layer += ax < halfwidth(anat, y, z, name).astype(np.float32)
    lut = np.array([AIR_HU, SKIN_HU, anat.fat_hu, anat.muscle_hu, anat.fat_hu], dtype=np.float32)
    canvas.hu[...] = lut[layer]
    canvas.organs[...] = np.minimum(layer, 1)


def _paint_table(canvas: Canvas, anat: Anatomy) -> None:
    """A curved CT table below the patient: two thin shells around a foam core."""
    grid = canvas.grid
    x = grid.x[None, :] - anat.center_x
    top = anat.table_y - anat.table_curvature * x**2
    depth = grid.y[:, None] - top
    within = np.abs(x) < 230.0
    table = within & (depth >= 0) & (depth < 14.0)
    shell = table & ((depth < 3.0) | (depth >= 11.0))
    hu = np.where(shell, TABLE_SHELL_HU, TABLE_CORE_HU).astype(np.float32)
    canvas.hu[:, table] = hu[table]
    canvas.organs[:, table] = TABLE


def _paint_thorax(canvas: Canvas, anat: Anatomy) -> None:
    """Lung bases, the diaphragm and the heart above it."""
    z_top = max(d[2] for d in anat.diaphragm_domes) + DOME_DEPTH + DIAPHRAGM_MM + 1.0
    box = canvas.grid.box((-1e4, -1e4, -1e4), (1e4, 1e4, z_top))
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    z_dia = diaphragm_z(anat, x, y)
    cavity = in_cavity(anat, x, y, z)
    above = z < z_dia
    cx, vb_y = anat.vertebra_xy
    hx, hy = anat.vertebra_half_axes
    # The spine and its posterior elements, wrapped by the lungs at its sides.
    spine_y = vb_y + hy + 8.0
    behind_spine = ((x - cx) / (hx + 12.0)) ** 2 + ((y - spine_y) / (2.0 * hy + 20.0)) ** 2 < 1.0
    lung = cavity & above & ~behind_spine
    canvas.paint(box, lung, LUNG_HU, LUNG)
    diaphragm = cavity & ~above & (z < z_dia + DIAPHRAGM_MM)
    canvas.paint(box, diaphragm, anat.muscle_hu, SOFT)
    hbox, (hx, hy, hz) = ellipsoid_box(canvas, anat.heart)
    if hbox is not None:
        heart = (ellipsoid_s(anat.heart, hx, hy, hz) <= 1.0) & (hz < diaphragm_z(anat, hx, hy))
        heart &= in_cavity(anat, hx, hy, hz)
        canvas.paint(hbox, heart, anat.ivc_hu, SOFT)


def _paint_back_muscles(canvas: Canvas, anat: Anatomy) -> None:
    """Paraspinal muscles along the whole spine and psoas muscles from L1 down."""
    cx, vb_y = anat.vertebra_xy
    hx = anat.vertebra_half_axes[0]
    para_y = anat.back_y - anat.fat_thickness[2] - 26.0
    box = canvas.grid.box((cx - 80.0, vb_y - 30.0, -1e4), (cx + 80.0, anat.back_y, 1e4))
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    para = ((np.abs(x - cx) - 36.0) / 30.0) ** 2 + ((y - para_y) / 27.0) ** 2 <= 1.0
    cavity = np.abs(x - anat.center_x) < halfwidth(anat, y, z, "fat")
    canvas.paint(box, para & cavity, anat.muscle_hu, SOFT)
    radius = np.interp(z, [anat.l1_top_z, anat.l1_top_z + 150.0], [5.0, 24.0])
    radius = np.where(z < anat.l1_top_z, 0.0, radius)
    psoas_x = hx + 0.8 * radius + 2.0
    psoas = ((np.abs(x - cx) - psoas_x) ** 2 + (y - vb_y + 2.0) ** 2) <= radius**2
    canvas.paint(box, psoas, anat.muscle_hu, SOFT)


def _paint_hollow_ellipsoid(
    canvas: Canvas, anat: Anatomy, e: Ellipsoid, wall_mm: float, gas_level: float
) -> None:
    """A gas- and fluid-filled viscus (stomach) with a wall, below the diaphragm."""
    box, (x, y, z) = ellipsoid_box(canvas, e)
    if box is None:
        return
    s = ellipsoid_s(e, x, y, z)
    organ = (s <= 1.0) & in_cavity(anat, x, y, z) & below_diaphragm(anat, x, y, z)
    lumen = s <= 1.0 - wall_mm / min(e.half_axes)
    gas = lumen & (y < e.center[1] - gas_level * e.half_axes[1])
    hu = np.where(gas, AIR_HU, np.where(lumen, FLUID_HU, BOWEL_WALL_HU)).astype(np.float32)
    canvas.paint(box, organ, hu, BOWEL)


def _paint_gut(canvas: Canvas, anat: Anatomy, bowel: BowelInjury | None) -> None:
    """Stomach, colon and small bowel (with the injured loop's thick wall)."""
    _paint_hollow_ellipsoid(canvas, anat, anat.stomach, 4.0, 0.35)
    paint_tube(canvas, anat.colon, lumen_hu=STOOL_HU, wall_hu=BOWEL_WALL_HU, organ=BOWEL)
    for i, loop in enumerate(anat.small_bowel):
        injured = None
        if bowel is not None and bowel.loop == i:
            loop, injured = bowel.thick_loop, bowel.window
        paint_tube(
            canvas,
            loop,
            lumen_hu=FLUID_HU,
            wall_hu=BOWEL_WALL_HU,
            organ=BOWEL,
            injured=injured,
        )


def _paint_liver(canvas: Canvas, anat: Anatomy) -> None:
    """Liver lobes under the right dome, hugging the wall, with bright portal/hepatic veins."""
    lo = np.minimum(*(np.asarray(e.center) - e.extent() for e in anat.liver))
    hi = np.maximum(*(np.asarray(e.center) + e.extent() for e in anat.liver))
    box = canvas.grid.box(lo - 1.0, hi + 1.0)
    if box is None:
        return
    x, y, z = canvas.grid.coords(box)
    s = np.minimum(ellipsoid_s(anat.liver[0], x, y, z), ellipsoid_s(anat.liver[1], x, y, z))
    liver = (s <= 1.0) & in_cavity(anat, x, y, z) & below_diaphragm(anat, x, y, z)
    canvas.paint(box, liver, anat.liver_hu, LIVER)
    for vessel in anat.liver_vessels:
        paint_tube(
            canvas,
            vessel,
            lumen_hu=anat.portal_hu,
            wall_hu=anat.portal_hu,
            organ=None,
            hosts=(LIVER,),
        )
    if anat.gallbladder is not None:
        gbox, (gx, gy, gz) = ellipsoid_box(canvas, anat.gallbladder)
        if gbox is not None:
            gb = (ellipsoid_s(anat.gallbladder, gx, gy, gz) <= 1.0) & in_cavity(anat, gx, gy, gz)
            canvas.paint(gbox, gb, FLUID_HU, SOFT)


def _paint_spleen(canvas: Canvas, anat: Anatomy) -> None:
    """Spleen along the left posterolateral wall, concave at its hilum."""
    box, (x, y, z) = ellipsoid_box(canvas, anat.spleen)
    if box is None:
        return
    spleen = (ellipsoid_s(anat.spleen, x, y, z) <= 1.0) & (
        ellipsoid_s(anat.spleen_hilum, x, y, z) > 1.0
    )
    spleen &= in_cavity(anat, x, y, z) & below_diaphragm(anat, x, y, z)
    hu: float | np.ndarray = anat.spleen_hu
    if anat.phase == "arterial":
        hu = anat.spleen_hu + spleen_bands(anat, x, y, z)
    canvas.paint(box, spleen, hu, SPLEEN)


def spleen_bands(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """HU offsets of the arterial-phase spleen: alternating bright and dark arciform bands.

    The bands fan out around the spleen's third local axis and bend with the distance from
    it, a pattern of zero mean and amplitude ``anat.spleen_bands[0]``.
    """
    amplitude, count, bend, phase = anat.spleen_bands
    u, v, _ = local_coords(anat.spleen, x, y, z)
    angle = np.arctan2(v, u) + bend * np.sqrt(u * u + v * v)
    return (amplitude * np.cos(count * angle + phase)).astype(np.float32)


def _paint_kidneys(canvas: Canvas, anat: Anatomy) -> None:
    """Kidneys: cortex, medulla, renal sinus fat and a urine-filled pelvis at the hilum."""
    for kidney, code in zip(anat.kidneys, (KIDNEY_R, KIDNEY_L), strict=True):
        box, (x, y, z) = ellipsoid_box(canvas, kidney)
        if box is None:
            continue
        s = ellipsoid_s(kidney, x, y, z)
        sinus, pelvis = kidney_sinus(kidney)
        hu = np.where(s > 0.72, anat.kidney_cortex_hu, anat.kidney_medulla_hu)
        hu = np.where(ellipsoid_s(sinus, x, y, z) <= 1.0, SINUS_FAT_HU, hu)
        hu = np.where(ellipsoid_s(pelvis, x, y, z) <= 1.0, FLUID_HU, hu).astype(np.float32)
        canvas.paint(box, s <= 1.0, hu, code)


def _paint_bladder(canvas: Canvas, anat: Anatomy) -> None:
    """Urine-filled bladder in the pelvis."""
    box, (x, y, z) = ellipsoid_box(canvas, anat.bladder)
    if box is not None:
        inside = (ellipsoid_s(anat.bladder, x, y, z) <= 1.0) & in_cavity(anat, x, y, z)
        canvas.paint(box, inside, FLUID_HU, SOFT)


def _paint_vessels(canvas: Canvas, anat: Anatomy) -> None:
    """IVC, aorta and iliac arteries (contrast-enhanced blood)."""
    paint_tube(canvas, anat.ivc, lumen_hu=anat.ivc_hu, wall_hu=anat.ivc_hu, organ=SOFT)
    for artery in (anat.aorta, *anat.iliac_arteries):
        paint_tube(canvas, artery, lumen_hu=anat.aorta_hu, wall_hu=anat.aorta_hu, organ=AORTA)


def _paint_spine(canvas: Canvas, anat: Anatomy) -> None:
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
    hu = np.where(disc, DISC_HU, np.where(cortex, CORTICAL_HU, CANCELLOUS_HU))
    canvas.paint(box, body, hu.astype(np.float32), np.where(disc, SOFT, BONE))

    canal_y = yv + hy + 8.0
    canal_r = 8.0
    dist = np.sqrt((x - cx) ** 2 + (y - canal_y) ** 2)
    arch = (dist >= canal_r) & (dist < canal_r + 6.0) & (y > yv + 0.6 * hy) & ~disc
    spinous = (np.abs(x - cx) < 4.0) & (y > canal_y) & (y < canal_y + canal_r + 40.0)
    spinous &= (phase < 0.55) | sacrum
    transverse = (np.abs(y - canal_y) < 3.5) & (np.abs(x - cx) < canal_r + 34.0)
    transverse &= (phase > 0.3) & (phase < 0.5) & ~sacrum
    inside_fat = np.abs(x - anat.center_x) < halfwidth(anat, y, z, "fat")
    canvas.paint(box, (arch | spinous | transverse) & inside_fat, BONE_PLATE_HU, BONE)
    canvas.paint(box, dist < canal_r, CSF_HU, SOFT)


def _paint_ribs(canvas: Canvas, anat: Anatomy) -> None:
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
    inner = halfwidth(anat, y, z, "cavity")
    ring = (ax >= inner) & (ax < inner + 9.0) & (ax < halfwidth(anat, y, z, "dermis"))
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
    sub_hu[sel] = BONE_PLATE_HU
    sub_org[sel] = BONE


def _paint_pelvis(canvas: Canvas, anat: Anatomy) -> None:
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
    inside = np.abs(x - anat.center_x) < halfwidth(anat, y, z, "fat")
    tau = np.linspace(0.0, 1.0, 24)[:, None]
    for side in (-1.0, 1.0):
        p0 = np.array([cx + side * sacrum_edge, vb_y + 12.0])
        p2 = np.array([cx + side * 0.85 * a, yc - 0.3 * ba])
        p1 = 0.5 * (p0 + p2) + np.array([side * 18.0, 18.0])  # concave anteromedially
        curve = (1 - tau) ** 2 * p0 + 2 * tau * (1 - tau) * p1 + tau**2 * p2
        dist, position = _polyline_distance_2d(x[0], y[0], curve)
        top = crest + 120.0 * (position / (len(curve) - 1) - 0.45) ** 2
        plate = (dist < 4.0)[None] & (z >= top[None]) & inside
        canvas.paint(box, plate, BONE_PLATE_HU, BONE)


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
