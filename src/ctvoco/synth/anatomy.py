"""A synthetic patient's anatomy: body size and layers, organs, vessels, gut and skeleton.

:func:`draw_anatomy` draws every per-patient parameter into an :class:`Anatomy`: first the
body frame (:mod:`~ctvoco.synth.body`), then the organs and vessels placed in it
(:mod:`~ctvoco.synth.organs`), the gut (:mod:`~ctvoco.synth.gut`) and the tissue
attenuation (:mod:`~ctvoco.synth.phases`); :meth:`Anatomy.in_phase` gives another phase.
Lengths are millimetres in the scanner frame (see :mod:`ctvoco.synth`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ctvoco.synth.body import Draw, diaphragm_domes, draw_body, draw_skeleton
from ctvoco.synth.gut import draw_colon, draw_small_bowel
from ctvoco.synth.organs import (
    draw_arteries,
    draw_bladder,
    draw_gallbladder,
    draw_heart,
    draw_ivc,
    draw_kidneys,
    draw_liver,
    draw_liver_vessels,
    draw_spleen,
    draw_stomach,
)
from ctvoco.synth.phases import SPLEEN_BAND_HU, Phase, phase_hu, tissue_quantiles
from ctvoco.synth.shapes import Ellipsoid, Tube, Vec3


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Per-patient parameters, in mm in the scanner frame (see :mod:`ctvoco.synth`).

    Attributes:
        seed: Seeds the patient's injury geometry, so every render of this patient places
            its lesions identically.
        center_x: Body midline ``x``.
        back_y: Posterior skin surface ``y`` (the flat back).
        body_half_width: Half width of the body at the reference level.
        body_half_depth_anterior: Midline-to-anterior-skin depth at the reference level.
        body_half_depth_posterior: Midline-to-back depth.
        width_profile: Width factors at :data:`~ctvoco.synth.body.PROFILE_Z` (lower chest to pelvis).
        belly_profile: Anterior depth factors at :data:`~ctvoco.synth.body.PROFILE_Z`.
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
        phase: Contrast phase the HU values above belong to.
        tissue_quantiles: The patient's quantile per tissue of
            :data:`~ctvoco.synth.phases.PHASE_HU`, shared by its phases.
        spleen_bands: Arciform bands of the arterial-phase spleen: ``(amplitude HU, band
            count, bend, phase)``.
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
    phase: Phase
    tissue_quantiles: tuple[float, ...]
    spleen_bands: tuple[float, int, float, float]

    def in_phase(self, phase: Phase) -> Anatomy:
        """The same patient with the tissue HU of another contrast phase."""
        return replace(self, phase=phase, **_hu_fields(phase_hu(phase, self.tissue_quantiles)))

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
    seed = int(rng.integers(2**31 - 1))
    body = draw_body(rng)
    d = Draw(rng, body.organ_scale)
    skel = draw_skeleton(d, body)
    heart = draw_heart(d, body, skel)
    liver = draw_liver(d, body, skel)
    gallbladder = draw_gallbladder(d, body, skel)
    spleen, spleen_hilum = draw_spleen(d, body, skel)
    kidneys = draw_kidneys(d, body, skel)
    stomach = draw_stomach(d, body, skel)
    bladder = draw_bladder(d, body, skel)
    aorta, iliac_arteries = draw_arteries(d, body, skel)
    ivc, ivc_top = draw_ivc(d, body, skel)
    liver_vessels = draw_liver_vessels(rng, *liver, ivc_top)
    cx, yc, vb_y = body.center_x, body.yc, skel.vb_y
    colon = draw_colon(
        rng, cx, yc, body.cav_a, body.cav_ant, body.cav_post, liver[0], spleen, skel.s1_top, vb_y
    )
    obstacles = (*liver, spleen, stomach, bladder, *kidneys)
    small_bowel = draw_small_bowel(
        rng, cx, yc, body.cav_a, body.cav_ant, skel.l1_top, skel.s1_top, vb_y, obstacles, colon
    )
    return Anatomy(
        seed=seed,
        center_x=cx,
        back_y=body.back_y,
        body_half_width=body.half_width,
        body_half_depth_anterior=body.depth_ant,
        body_half_depth_posterior=body.depth_post,
        width_profile=body.width_profile,
        belly_profile=body.belly_profile,
        fat_thickness=body.fat,
        muscle_thickness=body.muscle,
        table_y=body.table_y,
        table_curvature=body.table_curvature,
        diaphragm_domes=diaphragm_domes(body, skel),
        heart=heart,
        liver=liver,
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
        vertebra_xy=(cx, vb_y),
        vertebra_half_axes=skel.vb_half,
        vertebra_pitch=skel.pitch,
        l1_top_z=skel.l1_top,
        ribs=skel.ribs,
        iliac_crest_z=skel.iliac_crest,
        **_draw_enhancement(rng),
    )


def _draw_enhancement(rng: np.random.Generator) -> dict[str, Any]:
    """Tissue quantiles, the portal venous HU at them and the spleen's arterial bands."""
    quantiles = tissue_quantiles(rng)
    bands = (
        float(rng.uniform(*SPLEEN_BAND_HU)),
        int(rng.integers(4, 8)),
        float(rng.uniform(1.5, 3.0)),
        float(rng.uniform(0.0, 2.0 * np.pi)),
    )
    return {
        "phase": "portal_venous",
        "tissue_quantiles": quantiles,
        "spleen_bands": bands,
        **_hu_fields(phase_hu("portal_venous", quantiles)),
    }


def _hu_fields(hu: dict[str, float]) -> dict[str, float]:
    """Tissue HU of :func:`~ctvoco.synth.phases.phase_hu`, keyed as in Anatomy."""
    return {f"{tissue}_hu": value for tissue, value in hu.items()}
