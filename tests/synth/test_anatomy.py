"""Tests of ctvoco.synth.anatomy: where the organs are, their sizes, patient variation."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.synth import (
    DEFAULT_SPACING,
    ORGAN_CODES,
    InjuryLabels,
    draw_anatomy,
    render_volume,
)
from tests.synth.conftest import SEEDS, centroid, render


@pytest.mark.parametrize("seed", SEEDS)
def test_canonical_orientation(seed):
    ph = render(seed)
    width = ph.shape[2]
    liver = centroid(ph.organs == ORGAN_CODES["liver"])
    spleen = centroid(ph.organs == ORGAN_CODES["spleen"])
    bowel = centroid(ph.organs == ORGAN_CODES["bowel"])
    aorta = centroid(ph.organs == ORGAN_CODES["aorta"])
    kidney_r = centroid(ph.organs == ORGAN_CODES["kidney_right"])
    kidney_l = centroid(ph.organs == ORGAN_CODES["kidney_left"])
    body = centroid((ph.organs > 0) & (ph.organs != ORGAN_CODES["table"]))
    columns = np.arange(width)
    midline = np.abs(columns - body[2]) < 20.0 / DEFAULT_SPACING[2]
    spine = centroid((ph.organs == ORGAN_CODES["bone"]) & midline[None, None, :])
    # Patient right is column 0: liver and right kidney on the low-column side.
    assert liver[2] < width / 2 < spleen[2]
    assert kidney_r[2] < body[2] < kidney_l[2]
    # Row 0 is anterior: spine behind the aorta, spleen posterior.
    assert spine[1] > aorta[1]
    assert spleen[1] > body[1]
    # Slice 0 is cranial: liver above bowel, lung in the first slices.
    assert liver[0] < bowel[0]
    lung_slices = np.flatnonzero((ph.organs == ORGAN_CODES["lung"]).any(axis=(1, 2)))
    assert lung_slices[0] == 0 and lung_slices[-1] < ph.shape[0] // 2
    # The left kidney lies a little higher than the right one.
    assert kidney_l[0] < kidney_r[0]


def test_organ_volumes_do_not_depend_on_spacing():
    anatomy = draw_anatomy(np.random.default_rng(11))
    coarse = render_volume(anatomy, InjuryLabels(), (64, 160, 160), (5.0, 2.2, 2.2))
    fine = render_volume(anatomy, InjuryLabels(), (107, 235, 235), (3.0, 1.5, 1.5))
    for name in ("liver", "spleen", "kidney_right", "kidney_left", "aorta", "bowel", "bone"):
        code = ORGAN_CODES[name]
        v_coarse = (coarse.organs == code).sum() * np.prod(coarse.spacing)
        v_fine = (fine.organs == code).sum() * np.prod(fine.spacing)
        assert v_coarse == pytest.approx(v_fine, rel=0.1), name
    # Physiological sizes (mL).
    liver_ml = (fine.organs == ORGAN_CODES["liver"]).sum() * np.prod(fine.spacing) / 1000
    assert 900 < liver_ml < 2400


def test_anatomy_varies_between_patients():
    anatomies = [draw_anatomy(np.random.default_rng(s)) for s in range(12)]
    widths = np.array([a.body_half_width for a in anatomies])
    livers = np.array([a.liver[0].half_axes[0] for a in anatomies])
    aortic = np.array([a.aorta_hu for a in anatomies])
    for values in (widths, livers, aortic):
        assert values.std() / values.mean() > 0.03
    assert widths.min() / widths.mean() > 0.75
    assert widths.max() / widths.mean() < 1.25
