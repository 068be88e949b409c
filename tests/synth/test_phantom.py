"""Tests of the synthetic abdominal CT phantom (orientation, HU, labels, injuries, geometry)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage

from ctvoco.schema import LABEL_COLUMNS, TARGET_CLASSES, TARGETS
from ctvoco.synth import (
    DEFAULT_PREVALENCE,
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    INJURY_CODES,
    ORGAN_CODES,
    InjuryLabels,
    Phantom,
    draw_anatomy,
    draw_injury_labels,
    make_phantom,
    render_volume,
)

HEALTHY = (0, 0, 0, 0, 0)
SEEDS = (0, 1, 2)


@functools.cache
def render(
    seed: int,
    classes: tuple[int, ...] = HEALTHY,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    z_offset_mm: float = 0.0,
) -> Phantom:
    """A phantom of patient ``seed`` with the given labels (cached: do not modify it)."""
    return make_phantom(
        seed, shape, spacing, labels=InjuryLabels.from_classes(classes), z_offset_mm=z_offset_mm
    )


def labels_of(**targets: int) -> tuple[int, ...]:
    return InjuryLabels(**targets).as_classes()


def centroid(mask: np.ndarray) -> np.ndarray:
    """``(slice, row, column)`` centroid of a non-empty mask."""
    assert mask.any()
    return np.array(ndimage.center_of_mass(mask))


# --------------------------------------------------------------------------------------
# Labels


def test_to_row_is_one_hot_in_train_csv_order():
    labels = InjuryLabels(bowel=1, extravasation=0, kidney=2, liver=0, spleen=1)
    row = labels.to_row()
    assert tuple(row) == LABEL_COLUMNS
    assert row["bowel_injury"] == 1 and row["bowel_healthy"] == 0
    assert row["kidney_high"] == 1 and row["kidney_low"] == 0 and row["kidney_healthy"] == 0
    assert row["liver_healthy"] == 1
    assert row["spleen_low"] == 1
    for target in TARGETS:
        assert sum(row[f"{target}_{c}"] for c in TARGET_CLASSES[target]) == 1
    assert row["any_injury"] == 1 and labels.any_injury
    assert labels.as_classes() == (1, 0, 2, 0, 1)
    assert InjuryLabels.from_row(row) == labels
    assert InjuryLabels.from_classes(labels.as_classes()) == labels


def test_healthy_labels_have_no_injury():
    labels = InjuryLabels()
    assert not labels.any_injury
    assert labels.to_row()["any_injury"] == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"bowel": 2}, ValueError),
        ({"extravasation": -1}, ValueError),
        ({"liver": 3}, ValueError),
        ({"spleen": 1.0}, TypeError),
        ({"kidney": True}, TypeError),
    ],
)
def test_labels_are_validated(kwargs, error):
    with pytest.raises(error):
        InjuryLabels(**kwargs)


def test_from_row_rejects_non_one_hot():
    row = InjuryLabels().to_row()
    row["liver_low"] = 1
    with pytest.raises(ValueError, match="one-hot"):
        InjuryLabels.from_row(row)


def test_draw_injury_labels_follows_prevalence():
    rng = np.random.default_rng(0)
    draws = np.array([draw_injury_labels(rng).as_classes() for _ in range(3000)])
    for j, target in enumerate(TARGETS):
        freq = np.bincount(draws[:, j], minlength=len(TARGET_CLASSES[target])) / len(draws)
        np.testing.assert_allclose(freq, DEFAULT_PREVALENCE[target], atol=0.03)


@pytest.mark.parametrize(
    "prevalence",
    [
        {t: p for t, p in DEFAULT_PREVALENCE.items() if t != "liver"},
        {**DEFAULT_PREVALENCE, "liver": (0.5, 0.5)},
        {**DEFAULT_PREVALENCE, "bowel": (0.5, 0.6)},
        {**DEFAULT_PREVALENCE, "spleen": (1.2, -0.1, -0.1)},
        {**DEFAULT_PREVALENCE, "lungs": (1.0, 0.0)},
    ],
)
def test_draw_injury_labels_rejects_bad_prevalence(prevalence):
    with pytest.raises(ValueError):
        draw_injury_labels(np.random.default_rng(0), prevalence)


# --------------------------------------------------------------------------------------
# Volume basics


def test_same_seed_same_volume_different_seed_different():
    a = make_phantom(5)
    b = make_phantom(5)
    c = make_phantom(6)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.organs, b.organs)
    np.testing.assert_array_equal(a.injuries, b.injuries)
    assert a.labels == b.labels
    assert not np.array_equal(a.hu, c.hu)
    assert not np.array_equal(a.organs, c.organs)


def test_dtype_shape_and_metadata():
    shape, spacing = (40, 96, 112), (8.0, 3.5, 3.2)
    ph = make_phantom(3, shape, spacing, labels=InjuryLabels(liver=1))
    assert ph.hu.dtype == np.int16 and ph.hu.shape == shape
    assert ph.organs.dtype == np.uint8 and ph.organs.shape == shape
    assert ph.injuries.dtype == np.uint8 and ph.injuries.shape == shape
    assert ph.shape == shape
    assert ph.spacing == spacing
    assert ph.labels == InjuryLabels(liver=1)
    assert set(np.unique(ph.organs)) <= set(ORGAN_CODES.values())


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


@pytest.mark.parametrize("seed", SEEDS)
def test_table_is_below_and_separate_from_body(seed):
    ph = render(seed)
    for k in (5, ph.shape[0] // 2, ph.shape[0] - 5):
        components, count = ndimage.label(ph.hu[k] > -500)
        assert count >= 2
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        largest = components == np.argmax(sizes)
        organs = ph.organs[k]
        assert np.isin(organs[largest], [o for o in ORGAN_CODES.values() if o != 10]).all()
        table = organs == ORGAN_CODES["table"]
        assert table.any()
        assert not np.isin(components[table], components[largest]).any()
        # Below: in every column, the table lies posterior to (at higher rows than) the body.
        rows = np.arange(ph.shape[1])[:, None]
        both = largest.any(axis=0) & table.any(axis=0)
        assert both.sum() > ph.shape[2] // 2
        body_bottom = np.where(largest, rows, -1).max(axis=0)
        table_top = np.where(table, rows, ph.shape[1]).min(axis=0)
        assert (table_top[both] > body_bottom[both]).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_hu_bands_per_organ(seed):
    ph = render(seed)
    bands = {
        "outside": (-1024, -950),
        "soft_tissue": (-110, 20),
        "bone": (250, 800),
        "aorta": (130, 270),
        "liver": (90, 135),
        "spleen": (90, 140),
        "kidney_right": (110, 200),
        "kidney_left": (110, 200),
        "lung": (-900, -800),
        "table": (-60, 100),
    }
    for name, (lo, hi) in bands.items():
        median = float(np.median(ph.hu[ph.organs == ORGAN_CODES[name]]))
        assert lo <= median <= hi, (name, median)
    bowel = ph.hu[ph.organs == ORGAN_CODES["bowel"]]
    assert 0.05 < (bowel < -500).mean() < 0.6  # gas
    assert ((bowel > -50) & (bowel < 100)).mean() > 0.3  # wall and fluid
    soft = ph.hu[ph.organs == ORGAN_CODES["soft_tissue"]]
    assert (soft < -60).mean() > 0.3 and ((soft > 20) & (soft < 90)).mean() > 0.1  # fat, muscle
    assert ph.anatomy.aorta_hu == pytest.approx(
        np.median(ph.hu[ph.organs == ORGAN_CODES["aorta"]]), abs=25
    )


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


def test_z_offset_shifts_the_field_of_view():
    labels = labels_of(liver=1, spleen=2)
    top = render(4, labels)
    lower = render(4, labels, z_offset_mm=30.0)  # 6 slices of 5 mm further caudal
    np.testing.assert_array_equal(top.organs[6:], lower.organs[:-6])
    np.testing.assert_array_equal(top.injuries[6:], lower.injuries[:-6])
    assert lower.z_offset_mm == 30.0


def test_anatomy_varies_between_patients():
    anatomies = [draw_anatomy(np.random.default_rng(s)) for s in range(12)]
    widths = np.array([a.body_half_width for a in anatomies])
    livers = np.array([a.liver[0].half_axes[0] for a in anatomies])
    aortic = np.array([a.aorta_hu for a in anatomies])
    for values in (widths, livers, aortic):
        assert values.std() / values.mean() > 0.03
    assert widths.min() / widths.mean() > 0.75
    assert widths.max() / widths.mean() < 1.25


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (64, 160)},
        {"shape": (0, 160, 160)},
        {"shape": (64, 160.5, 160)},
        {"spacing": (5.0, 0.0, 2.2)},
        {"spacing": (5.0, 2.2)},
        {"noise_hu": -1.0},
    ],
)
def test_render_rejects_bad_arguments(kwargs):
    anatomy = draw_anatomy(np.random.default_rng(0))
    with pytest.raises(ValueError):
        render_volume(anatomy, InjuryLabels(), **kwargs)


# --------------------------------------------------------------------------------------
# Injuries


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
        assert darker.sum() >= 25
        assert (lesion & organ).sum() < 0.15 * organ.sum()
        # Thin lacerations still span several slices.
        assert np.flatnonzero(darker.any(axis=(1, 2))).size >= 3
    else:
        injured_organ = organ & np.isin(healthy.organs, np.unique(healthy.organs[lesion]))
        assert (lesion & injured_organ).sum() > 0.2 * injured_organ.sum()
        assert darker.sum() > 0.15 * injured_organ.sum()
    lesion_hu = np.median(injured.hu[lesion & organ])
    assert 15 <= lesion_hu <= 65


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
    excluded = np.isin(healthy.organs, [ORGAN_CODES["bone"], ORGAN_CODES["aorta"]])
    excluded = ndimage.binary_dilation(excluded, iterations=2)
    bright_healthy = ((healthy.hu > 250) & ~excluded).sum()
    bright_injured = ((injured.hu > 250) & ~excluded).sum()
    assert bright_injured - bright_healthy >= 5
    assert injured.hu[blush].max() > 250
    if len(hosts) == 3:  # next to the injured organ
        organ = ndimage.binary_dilation(healthy.organs == hosts[1], iterations=3)
        bright = blush & (injured.hu > 200)
        assert (bright & organ).sum() >= 0.5 * bright.sum()


@pytest.mark.parametrize("target", ["liver", "spleen", "kidney"])
def test_low_grade_lesion_survives_downsampling(target):
    """Window [-150, 250] to 0..255 and 2x box downsampling keep a clear local drop."""

    def windowed_box2(hu: np.ndarray) -> np.ndarray:
        w = np.clip((hu.astype(np.float64) + 150.0) / 400.0 * 255.0, 0.0, 255.0)
        d, h, x = (s // 2 * 2 for s in w.shape)
        return w[:d, :h, :x].reshape(d // 2, 2, h // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))

    drop = windowed_box2(render(0).hu) - windowed_box2(render(0, labels_of(**{target: 1})).hu)
    assert drop.max() > 25
