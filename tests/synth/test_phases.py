"""Tests of the contrast phases (ctvoco.synth.phases) and how a patient renders in each."""

from __future__ import annotations

import numpy as np
import pytest

from ctvoco.synth import DEFAULT_SHAPE, DEFAULT_SPACING, ORGAN_CODES, InjuryLabels
from ctvoco.synth.anatomy import draw_anatomy
from ctvoco.synth.phases import (
    ARTERIAL_SHARE,
    PHASE_HU,
    phase_hu,
    series_phases,
    tissue_quantiles,
)
from ctvoco.synth.render import render_volume
from tests.synth.conftest import HEALTHY


def rendered(seed: int, phase: str):
    anatomy = draw_anatomy(np.random.default_rng(seed)).in_phase(phase)
    return render_volume(
        anatomy, InjuryLabels.from_classes(HEALTHY), DEFAULT_SHAPE, DEFAULT_SPACING
    )


def median_hu(phantom, organ: str) -> float:
    return float(np.median(phantom.hu[phantom.organs == ORGAN_CODES[organ]]))


@pytest.mark.parametrize("seed", range(20))
def test_each_phase_orders_the_tissues_as_on_contrast_ct(seed):
    q = tissue_quantiles(np.random.default_rng(seed))
    art, pv = phase_hu("arterial", q), phase_hu("portal_venous", q)
    # Portal venous: renal cortex far brighter than liver and spleen; portal veins bright.
    assert pv["kidney_cortex"] > max(pv["liver"], pv["spleen"]) + 30
    assert pv["portal"] > pv["liver"] + 30
    # Late arterial: corticomedullary differentiation, bright aorta, unenhanced liver.
    assert art["kidney_cortex"] - art["kidney_medulla"] >= 70
    assert art["aorta"] > pv["aorta"] + 40
    assert art["liver"] < pv["liver"] - 15
    assert art["fat"] < -85 and art["muscle"] < 60


def test_a_patient_keeps_its_quantile_in_both_phases():
    anatomy = draw_anatomy(np.random.default_rng(3))
    arterial = anatomy.in_phase("arterial")
    assert arterial.tissue_quantiles == anatomy.tissue_quantiles
    assert arterial.liver is anatomy.liver and arterial.seed == anatomy.seed
    for tissue, q in zip(PHASE_HU, anatomy.tissue_quantiles, strict=True):
        for phase, a in (("portal_venous", anatomy), ("arterial", arterial)):
            low, high = PHASE_HU[tissue][phase]
            assert getattr(a, f"{tissue}_hu") == pytest.approx(low + q * (high - low))
    back = arterial.in_phase("portal_venous")
    assert (back.liver_hu, back.aorta_hu) == (anatomy.liver_hu, anatomy.aorta_hu)


def test_an_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="delayed"):
        phase_hu("delayed", tissue_quantiles(np.random.default_rng(0)))  # type: ignore[arg-type]


def test_a_second_series_is_in_the_other_phase():
    rng = np.random.default_rng(0)
    firsts = []
    for _ in range(2000):
        first, second = series_phases(2, rng)
        assert {first, second} == {"arterial", "portal_venous"}
        firsts.append(first)
    assert np.mean(np.array(firsts) == "arterial") == pytest.approx(ARTERIAL_SHARE, abs=0.03)
    assert len(series_phases(1, rng)) == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_the_arterial_spleen_is_banded_and_the_portal_venous_one_homogeneous(seed):
    arterial, portal = rendered(seed, "arterial"), rendered(seed, "portal_venous")
    np.testing.assert_array_equal(arterial.organs, portal.organs)
    spleen = (portal.organs == ORGAN_CODES["spleen"]) & (portal.hu > 60)
    # Image noise is 12 HU; the arciform bands add 20-30 HU of amplitude in the arterial phase.
    assert np.std(arterial.hu[spleen]) > np.std(portal.hu[spleen]) + 5
    assert median_hu(arterial, "aorta") > median_hu(portal, "aorta") + 40
    assert median_hu(arterial, "liver") < median_hu(portal, "liver") - 15
