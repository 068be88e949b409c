"""Tests of the synthetic injuries (ctvoco.synth.injuries, organ_injuries, lesions)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctvoco.labels import TARGETS
from ctvoco.synth import (
    DEFAULT_PREVALENCE,
    INJURY_CODES,
    ORGAN_CODES,
    make_phantom,
)
from ctvoco.synth.injuries import plan_injuries
from ctvoco.synth.render import Phantom
from tests.synth.conftest import SEEDS, labels_of, render


@pytest.mark.parametrize("seed", range(4))
def test_injury_map_matches_labels(seed):
    ph = make_phantom(seed, prevalence={**DEFAULT_PREVALENCE, "liver": (0.2, 0.4, 0.4)})
    expected = {INJURY_CODES[t] for t in TARGETS if getattr(ph.labels, t)}
    assert set(np.unique(ph.injuries)) - {0} == expected


def test_healthy_patient_has_no_injury_voxels():
    for seed in SEEDS:
        assert not render(seed).injuries.any()


ORGAN_CASES = [
    (target, grade, seed)
    for target in ("liver", "spleen", "kidney")
    for grade in (1, 2)
    for seed in SEEDS[:2]
]


@pytest.mark.parametrize(("target", "grade", "seed"), ORGAN_CASES)
def test_organ_injury_is_hypodense_region_in_organ(target, grade, seed):
    healthy = render(seed)
    injured = render(seed, labels_of(**{target: grade}))
    codes = {"kidney": (6, 7), "liver": (4,), "spleen": (5,)}[target]
    organ = np.isin(healthy.organs, codes)
    np.testing.assert_array_equal(healthy.organs, injured.organs)
    diff = injured.hu.astype(np.int32) - healthy.hu
    darker = organ & (diff < -40)
    lesion = injured.injuries == INJURY_CODES[target]
    assert set(np.unique(injured.injuries)) == {0, INJURY_CODES[target]}
    # Nothing changes outside the lesion and the one-voxel rim its partial-volume blur reaches.
    rim = ndimage.binary_dilation(lesion, structure=np.ones((3, 3, 3), dtype=bool))
    assert (diff[~rim] == 0).all()
    if grade == 1:
        # At most a thin subcapsular rim (grade III: over half the surface) and lacerations.
        assert (lesion & organ).sum() < 0.25 * organ.sum()
        if deep_laceration(injured, target):  # shallower ones may be a few voxels
            assert darker.sum() >= 25
            # Thin lacerations still span several slices.
            assert np.flatnonzero(darker.any(axis=(1, 2))).size >= 3
        else:
            assert lesion.any()
    else:
        injured_organ = organ & np.isin(healthy.organs, np.unique(healthy.organs[lesion]))
        assert (lesion & injured_organ).sum() > 0.2 * injured_organ.sum()
        assert darker.sum() > 0.15 * injured_organ.sum()
    # Blood and clot stay at least 25 HU below the enhanced parenchyma (grades.CLOT_CONTRAST_HU).
    lesion_hu = np.median(injured.hu[lesion & organ])
    assert 15 <= lesion_hu <= np.median(healthy.hu[organ & (healthy.hu > 60)]) - 25


def test_high_grade_injury_has_perihepatic_hematoma():
    """High grade adds a hematoma (~55 HU) just outside the organ, where fat was."""
    hits = 0
    for seed in SEEDS:
        healthy = render(seed)
        for target in ("liver", "spleen", "kidney"):
            injured = render(seed, labels_of(**{target: 2}))
            outside = (injured.injuries == INJURY_CODES[target]) & (healthy.organs == 1)
            if outside.sum() >= 10:
                assert 35 <= np.median(injured.hu[outside]) <= 75
                assert np.median(healthy.hu[outside]) < -50
                hits += 1
    assert hits >= 6


def test_liver_and_spleen_lacerations_look_alike():
    """Same HU inside liver and spleen lacerations: only their position tells them apart."""
    medians = {}
    for target in ("liver", "spleen"):
        values = [
            np.median(
                render(s, labels_of(**{target: 1})).hu[
                    render(s, labels_of(**{target: 1})).injuries == INJURY_CODES[target]
                ]
            )
            for s in SEEDS[:2]
        ]
        medians[target] = np.mean(values)
    assert medians["liver"] == pytest.approx(medians["spleen"], abs=15)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_bowel_injury_thick_wall_free_fluid_and_gas(seed):
    healthy = render(seed)
    injured = render(seed, labels_of(bowel=1))
    lesion = injured.injuries == INJURY_CODES["bowel"]
    assert set(np.unique(injured.injuries)) == {0, INJURY_CODES["bowel"]}
    bowel = healthy.organs == ORGAN_CODES["bowel"]
    h, i = healthy.hu.astype(np.int32), injured.hu.astype(np.int32)
    thick_wall = lesion & bowel & (i - h > 30)
    free_fluid = lesion & ~bowel & (h < -50) & (i > -20) & (i < 60)
    free_gas = lesion & ~bowel & (h > -200) & (i < -500)
    assert thick_wall.sum() >= 10
    assert free_fluid.sum() >= 100
    assert free_gas.sum() >= 1


@pytest.mark.parametrize(
    ("classes", "hosts"),
    [
        (labels_of(extravasation=1), (1, 8)),
        (labels_of(extravasation=1, spleen=2), (1, 5, 8)),
        (labels_of(extravasation=1, liver=1), (1, 4, 8)),
    ],
)
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_extravasation_is_a_bright_blush(classes, hosts, seed):
    healthy = render(seed)
    injured = render(seed, classes)
    blush = injured.injuries == INJURY_CODES["extravasation"]
    assert blush.any()
    assert np.isin(injured.organs[blush], hosts).all()
    # The blush attenuates like the series' aortic blood (0.9-1.1 times its HU).
    aorta_hu = float(np.median(healthy.hu[healthy.organs == ORGAN_CODES["aorta"]]))
    threshold = 0.8 * aorta_hu
    new_bright = blush & (injured.hu > threshold) & (healthy.hu < threshold)
    assert new_bright.sum() >= 5
    assert 0.85 * aorta_hu <= np.percentile(injured.hu[blush], 95) <= 1.2 * aorta_hu
    if len(hosts) == 3:  # next to the injured organ
        organ = ndimage.binary_dilation(healthy.organs == hosts[1], iterations=3)
        bright = blush & (injured.hu > threshold)
        assert (bright & organ).sum() >= 0.5 * bright.sum()


@pytest.mark.parametrize("target", ["liver", "spleen", "kidney"])
def test_low_grade_lesion_survives_downsampling(target):
    """Window [-150, 250] to 0..255 and 2x box downsampling keep a clear local drop of a
    low-grade injury with a laceration deeper than 1 cm."""

    def windowed_box2(hu: np.ndarray) -> np.ndarray:
        w = np.clip((hu.astype(np.float64) + 150.0) / 400.0 * 255.0, 0.0, 255.0)
        d, h, x = (s // 2 * 2 for s in w.shape)
        return w[:d, :h, :x].reshape(d // 2, 2, h // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))

    checked = 0
    for seed in range(6):
        injured = render(seed, labels_of(**{target: 1}))
        if not deep_laceration(injured, target):  # may vanish, as on real CT
            continue
        drop = windowed_box2(render(seed).hu) - windowed_box2(injured.hu)
        assert drop.max() > 25, seed
        checked += 1
    assert checked >= 2


def deep_laceration(phantom: Phantom, target: str) -> bool:
    """Whether the AAST grade drawn for an injured organ has lacerations deeper than 1 cm
    (liver and spleen grade II and above, kidney grade III and above)."""
    grade = plan_injuries(phantom.anatomy, phantom.labels).grades[target]
    return grade >= (3 if target == "kidney" else 2)
