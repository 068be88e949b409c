"""Tests of ctvoco.synth.render: determinism, dtypes, table, HU bands, field of view."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctvoco.synth import (
    ORGAN_CODES,
    InjuryLabels,
    draw_anatomy,
    make_phantom,
    render_volume,
)
from tests.synth.conftest import SEEDS, labels_of, render


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
        "soft_tissue": (-110, 40),
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


def test_z_offset_shifts_the_field_of_view():
    labels = labels_of(liver=1, spleen=2)
    top = render(4, labels)
    lower = render(4, labels, z_offset_mm=30.0)  # 6 slices of 5 mm further caudal
    np.testing.assert_array_equal(top.organs[6:], lower.organs[:-6])
    np.testing.assert_array_equal(top.injuries[6:], lower.injuries[:-6])
    assert lower.z_offset_mm == 30.0


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
