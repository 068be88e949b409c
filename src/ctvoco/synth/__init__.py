"""Synthetic abdominal CT: phantoms with RSNA-style injury labels (no real data needed).

Real RSNA 2023 and FLARE data need accounts, so tests, the demo and the label-efficiency
study run on synthetic patients. A patient is two objects:

* :class:`Anatomy` — every per-patient parameter (body size, fat and muscle thickness,
  organ ellipsoids, vessel and bowel paths, vertebra size, table height, contrast-phase HU).
  It is drawn by :func:`draw_anatomy` (:mod:`~ctvoco.synth.anatomy`, with the gut paths in
  :mod:`~ctvoco.synth.gut` and the primitives in :mod:`~ctvoco.synth.shapes`).
* :class:`InjuryLabels` — the five RSNA targets, drawn by :func:`draw_injury_labels`
  (:mod:`~ctvoco.synth.labels`).

:func:`render_volume` (:mod:`~ctvoco.synth.render`) turns both into a CT volume in
Hounsfield units: :mod:`~ctvoco.synth.painting` paints the anatomy into a
:mod:`~ctvoco.synth.canvas`, :mod:`~ctvoco.synth.injuries` plans the lesions of the labels
(:mod:`~ctvoco.synth.organ_injuries` for the solid organs) and
:mod:`~ctvoco.synth.lesions` paints them. :mod:`~ctvoco.synth.cohort` writes whole cohorts
in the real file formats, its DICOM series through :mod:`~ctvoco.synth.dicom_writer`.

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

* ``organs`` (:data:`ORGAN_CODES`, :mod:`~ctvoco.synth.tissues`): 0 outside (air), 1 other soft tissue (fat, muscle, skin,
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

from ctvoco.synth.anatomy import Anatomy, draw_anatomy
from ctvoco.synth.dicom_writer import SeriesTags, new_uid, write_dicom_series
from ctvoco.synth.labels import DEFAULT_PREVALENCE, INJURY_CODES, InjuryLabels, draw_injury_labels
from ctvoco.synth.render import DEFAULT_SHAPE, DEFAULT_SPACING, Phantom, make_phantom, render_volume
from ctvoco.synth.shapes import Ellipsoid, Tube
from ctvoco.synth.tissues import ORGAN_CODES

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
    "SeriesTags",
    "Tube",
    "draw_anatomy",
    "draw_injury_labels",
    "make_phantom",
    "new_uid",
    "render_volume",
    "write_dicom_series",
]
