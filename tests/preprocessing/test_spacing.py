"""Resampling to a target voxel spacing (``preprocess.target_spacing``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.errors import UserError
from ctvoco.io.volume import CTVolume
from ctvoco.preprocessing import PreprocessConfig, preprocess_volume
from ctvoco.preprocessing.spacing import fit_to_shape, resample_to_spacing

IN_PLANE_MM = 4.0
FIELD_MM = (240.0, 256.0, 256.0)  # (z, y, x) physical extent of the phantom scans


def phantom_scan(z_mm: float, in_plane_mm: float = IN_PLANE_MM, *, scale: float = 1.0) -> CTVolume:
    """One analytic abdomen sampled at voxel centres: ``z_mm`` slices, ``in_plane_mm`` pixels.

    A body whose width changes along z, a dense sphere (an organ) and a bright rod (spine);
    ``scale`` makes the whole patient larger or smaller. The same patient scanned with other
    slice thicknesses covers the same millimetres.
    """
    shape = tuple(
        round(f / s) for f, s in zip(FIELD_MM, (z_mm, in_plane_mm, in_plane_mm), strict=True)
    )
    z, y, x = (
        (np.arange(n) + 0.5) * s - f / 2
        for n, s, f in zip(shape, (z_mm, in_plane_mm, in_plane_mm), FIELD_MM, strict=True)
    )
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    half_width = scale * (85.0 + 15.0 * np.cos(zz / 60.0))
    hu = np.full(shape, -1000.0)
    hu[(xx / half_width) ** 2 + (yy / (0.7 * half_width)) ** 2 <= 1] = 40.0
    hu[(xx - 30 * scale) ** 2 + yy**2 + (zz - 20) ** 2 <= (45.0 * scale) ** 2] = 160.0
    hu[(xx**2 + (yy - 45 * scale) ** 2 <= (12.0 * scale) ** 2)] = 700.0
    return CTVolume(hu=hu.astype(np.int16), spacing=(z_mm, in_plane_mm, in_plane_mm))


@pytest.mark.parametrize(
    ("shape", "spacing", "target"),
    [
        ((400, 20, 30), (0.6, 1.0, 1.0), (5.0, 1.0, 1.0)),
        ((48, 64, 64), (5.0, 0.7, 0.7), (1.5, 1.5, 1.5)),
        ((33, 17, 50), (2.5, 0.8, 3.3), (3.0, 2.0, 1.1)),
    ],
)
def test_resampling_keeps_the_physical_extent(shape, spacing, target):
    volume = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.uint8)
    out = resample_to_spacing(volume, spacing, target)
    extent_in = np.array(shape) * np.array(spacing)
    extent_out = np.array(out.shape) * np.array(target)
    # the extent is kept to within half a target voxel per axis
    assert np.all(np.abs(extent_out - extent_in) <= np.array(target) / 2 + 1e-9)
    assert out.dtype == np.float32


def test_resampling_a_constant_volume_keeps_the_value():
    out = resample_to_spacing(np.full((40, 12, 12), 77, np.uint8), (0.6, 2.0, 2.0), (5.0, 1.0, 3.0))
    np.testing.assert_allclose(out, 77.0, atol=1e-3)


def test_resampling_to_the_same_spacing_is_the_identity():
    volume = np.random.default_rng(1).integers(0, 256, size=(9, 10, 11)).astype(np.uint8)
    np.testing.assert_allclose(
        resample_to_spacing(volume, (2.0, 1.0, 1.0), (2.0, 1.0, 1.0)), volume
    )


def test_thin_and_thick_slices_of_one_patient_give_nearly_the_same_array():
    config = PreprocessConfig(target_spacing=(5.0, IN_PLANE_MM, IN_PLANE_MM), shape=(48, 64, 64))
    thin = preprocess_volume(phantom_scan(0.6), config).array.astype(float)
    thick = preprocess_volume(phantom_scan(5.0), config).array.astype(float)
    assert thin.shape == thick.shape == (48, 64, 64)
    difference = np.abs(thin - thick)
    assert difference.mean() < 2.0
    assert np.percentile(difference, 99) < 40
    # and both are the same patient: body, organ and spine are where they belong
    assert np.corrcoef(thin.ravel(), thick.ravel())[0, 1] > 0.98


def test_with_a_target_spacing_the_array_keeps_the_physical_size():
    """A larger patient stays larger (no stretch to the output shape), voxel = target."""
    config = PreprocessConfig(target_spacing=(5.0, 2.0, 2.0), shape=(48, 128, 128))
    widths = []
    for scale in (0.8, 1.1):
        array = preprocess_volume(phantom_scan(2.5, scale=scale), config).array
        body = array[24] > 0
        widths.append(np.flatnonzero(body.any(axis=0)).size * 2.0)  # columns x 2 mm
    # body width at the middle slice: 2 * half_width, half_width = scale * (85 + 15 cos(z/60))
    expected = [2 * s * (85.0 + 15.0 * np.cos(2.5 / 60.0)) for s in (0.8, 1.1)]
    np.testing.assert_allclose(widths, expected, atol=6.0)
    # without a target spacing both bodies are stretched to the same width
    stretched = [
        preprocess_volume(phantom_scan(2.5, scale=s), PreprocessConfig(shape=(48, 128, 128)))
        for s in (0.8, 1.1)
    ]
    small, large = ((r.array[24] > 0).any(axis=0).sum() for r in stretched)
    assert abs(large / small - 1) < 0.05


def test_fit_to_shape_crops_and_pads_around_the_centre():
    volume = np.arange(5 * 4 * 6, dtype=np.float32).reshape(5, 4, 6) + 1
    out = fit_to_shape(volume, (3, 6, 4))
    assert out.shape == (3, 6, 4)
    np.testing.assert_array_equal(out[:, 1:5, :], volume[1:4, :, 1:5])
    assert (out[:, 0] == 0).all() and (out[:, 5] == 0).all()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (1.5, (1.5, 1.5, 1.5)),
        ([5, 0.8], (5.0, 0.8, 0.8)),
        ([3, 1, 2], (3.0, 1.0, 2.0)),
    ],
)
def test_target_spacing_forms(value, expected):
    assert PreprocessConfig(target_spacing=value).target_spacing == expected
    assert PreprocessConfig.from_mapping({"target_spacing": value}).target_spacing == expected


@pytest.mark.parametrize("value", [0, -1.0, [1, 2, 3, 4], "thin", [1.0, float("nan")]])
def test_bad_target_spacing_names_the_key(value):
    with pytest.raises(UserError, match=r"preprocess\.target_spacing"):
        PreprocessConfig(target_spacing=value)


def test_default_keeps_the_fixed_shape_resize_and_old_caches(tmp_path):
    """``target_spacing: null`` is the default, and caches made before the option still match."""
    assert PreprocessConfig().target_spacing is None
    cache = VolumeCache(tmp_path / "cache")
    cache.ensure_variant(PreprocessConfig())
    written = json.loads(cache.variant_path.read_text())
    written.pop("target_spacing")  # a cache.json written before the option existed
    cache.variant_path.write_text(json.dumps(written))
    cache.ensure_variant(PreprocessConfig())  # accepted: built with what the default does
    with pytest.raises(UserError, match="target_spacing"):
        cache.ensure_variant(PreprocessConfig(target_spacing=2.0))
