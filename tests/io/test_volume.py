"""Tests for ctvoco.io.volume: the canonical orientation and CTVolume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ctvoco.errors import DataError
from ctvoco.io.volume import (
    CANONICAL_DIRECTIONS,
    CTVolume,
    canonical_transform,
    check_hounsfield,
    to_canonical,
)

# LPS unit vectors
X, Y, Z = np.eye(3)


def _rotation_about_z(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


# (name, directions (row a = LPS direction of array axis a), expected order, expected flips)
TRANSFORM_CASES = [
    ("canonical", CANONICAL_DIRECTIONS, (0, 1, 2), (False, False, False)),
    # NIfTI-style voxel axes along +x (left), +y (posterior), +z (superior)
    ("lps_identity", np.stack([X, Y, Z]), (2, 1, 0), (True, False, False)),
    # RAS+ storage: x to the right, y anterior, z up
    ("ras", np.stack([-X, -Y, Z]), (2, 1, 0), (True, True, True)),
    ("permutation", np.stack([Z, X, -Y]), (0, 2, 1), (True, True, False)),
    ("caudal_first_flipped_rows", np.stack([-Z, -Y, X]), (0, 1, 2), (False, True, False)),
    ("columns_to_the_right", np.stack([-Z, Y, -X]), (0, 1, 2), (False, False, True)),
    ("rows_and_columns_swapped", np.stack([-Z, X, Y]), (0, 2, 1), (False, False, False)),
    # a 10 degree in-plane rotation still maps to the nearest axes
    (
        "oblique_10deg",
        CANONICAL_DIRECTIONS @ _rotation_about_z(10).T,
        (0, 1, 2),
        (False, False, False),
    ),
]


@pytest.mark.parametrize(
    ("directions", "order", "flips"),
    [c[1:] for c in TRANSFORM_CASES],
    ids=[c[0] for c in TRANSFORM_CASES],
)
def test_canonical_transform(directions, order, flips):
    assert canonical_transform(directions) == (order, flips)


def _signed_permutations() -> list[np.ndarray]:
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            out.append(np.eye(3)[list(perm)] * np.array(signs)[:, None])
    return out


@pytest.mark.parametrize(
    "directions", _signed_permutations(), ids=lambda d: str(d.astype(int).tolist())
)
def test_to_canonical_all_signed_permutations(directions):
    """Every voxel lands where its physical position says, whatever the storage axes."""
    shape = (2, 3, 4)
    spacing = (1.5, 2.5, 3.5)  # per array axis
    idx = np.indices(shape).reshape(3, -1).T.astype(float)  # (N, 3) voxel indices
    lps = idx @ directions  # physical offset (unit spacing) of each voxel
    # canonical axes grow along -z, +y, +x: encode them in separate decimal digits
    value = 100 * (-lps[:, 2]) + 10 * lps[:, 1] + lps[:, 0]
    array = value.reshape(shape)
    out, new_spacing = to_canonical(array, directions, spacing)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(np.diff(out, axis=0), 100)
    np.testing.assert_array_equal(np.diff(out, axis=1), 10)
    np.testing.assert_array_equal(np.diff(out, axis=2), 1)
    # the spacing follows the axes
    for c, canonical in enumerate(CANONICAL_DIRECTIONS):
        a = int(np.argmax(np.abs(directions @ canonical)))
        assert new_spacing[c] == spacing[a]
        assert out.shape[c] == shape[a]


def test_to_canonical_explicit_lps_identity():
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # axes along +x, +y, +z
    out, spacing = to_canonical(array, np.eye(3), (1.0, 2.0, 3.0))
    np.testing.assert_array_equal(out, array.transpose(2, 1, 0)[::-1])
    assert spacing == (3.0, 2.0, 1.0)
    assert out.flags.c_contiguous


DEGENERATE_CASES = [
    ("two_axes_along_x", np.stack([X, X, Z])),
    ("two_axes_along_z", np.stack([Z, -Z, Y])),
    ("diagonal_tie", np.stack([(X + Y) / np.sqrt(2), (Y - X) / np.sqrt(2), Z])),
    ("zero_direction", np.stack([np.zeros(3), Y, X])),
]


@pytest.mark.parametrize(
    ("name", "directions"),
    DEGENERATE_CASES,
    ids=[c.values[0] if hasattr(c, "values") else c[0] for c in DEGENERATE_CASES],
)
def test_canonical_transform_degenerate(name, directions):
    with pytest.raises(ValueError, match="degenerate"):
        canonical_transform(directions)


def test_to_canonical_degenerate_raises():
    with pytest.raises(ValueError, match="degenerate"):
        to_canonical(np.zeros((2, 3, 4)), np.stack([X, X, Z]), (1.0, 1.0, 1.0))


def test_ctvolume_valid():
    hu = np.zeros((3, 4, 5), dtype=np.int16)
    volume = CTVolume(hu=hu, spacing=[2, 1, 1])
    assert volume.shape == (3, 4, 5)
    assert volume.spacing == (2.0, 1.0, 1.0)
    assert all(isinstance(s, float) for s in volume.spacing)
    assert volume.positions is None
    assert volume.warnings == []
    other = CTVolume(hu=hu, spacing=(1, 1, 1))
    other.warnings.append("x")
    assert volume.warnings == []  # not a shared default list


BAD_VOLUME_CASES = [
    ("2d", np.zeros((4, 5)), (1.0, 1.0, 1.0), "must be \\(D, H, W\\)"),
    ("4d", np.zeros((1, 2, 3, 4)), (1.0, 1.0, 1.0), "must be \\(D, H, W\\)"),
    ("two_spacings", np.zeros((2, 3, 4)), (1.0, 1.0), "spacing"),
    ("zero_spacing", np.zeros((2, 3, 4)), (1.0, 0.0, 1.0), "spacing"),
    ("negative_spacing", np.zeros((2, 3, 4)), (-1.0, 1.0, 1.0), "spacing"),
]


@pytest.mark.parametrize(
    ("name", "hu", "spacing", "match"), BAD_VOLUME_CASES, ids=[c[0] for c in BAD_VOLUME_CASES]
)
def test_ctvolume_invalid(name, hu, spacing, match):
    with pytest.raises(ValueError, match=match):
        CTVolume(hu=hu, spacing=spacing)


# ---------------------------------------------------------------- check_hounsfield


def _body(shape=(6, 64, 64), air=-1000, padding=None, fat=-100, soft=40, bone=700):
    """Air around an elliptic body of fat, soft tissue and a bone disc (HU)."""
    _, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    hu = np.full(shape, air, dtype=np.int16)
    if padding is not None:  # outside the round field of view
        hu[:, (yy - h / 2) ** 2 + (xx - w / 2) ** 2 > (h / 2) ** 2] = padding
    hu[:, ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.45 * w)) ** 2 <= 1] = fat
    hu[:, ((yy - h / 2) / (0.3 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2 <= 1] = soft
    hu[:, (yy - 0.7 * h) ** 2 + (xx - w / 2) ** 2 <= (0.08 * h) ** 2] = bone
    return hu


PLAUSIBLE_CASES = [
    ("body_in_air", _body()),
    ("padding_outside_fov", _body(padding=-3024)),
    ("only_air", np.full((2, 16, 16), -1000, dtype=np.int16)),
    ("tight_crop_without_air", _body()[:, 20:44, 20:44]),
    ("contrast_and_bone", _body(soft=250, bone=1500)),
    ("one_slice", _body()[:1]),
]


@pytest.mark.parametrize("hu", [c[1] for c in PLAUSIBLE_CASES], ids=[c[0] for c in PLAUSIBLE_CASES])
def test_real_ct_values_pass(hu):
    check_hounsfield(hu, "ct")


SHIFTED_CASES = [
    ("stored_plus_1024", _body() + 1024),
    ("padding_plus_1024", (_body(padding=-1024) + 1024)),
    ("tight_crop_plus_1024", _body()[:, 20:44, 20:44] + 1024),
]


@pytest.mark.parametrize("hu", [c[1] for c in SHIFTED_CASES], ids=[c[0] for c in SHIFTED_CASES])
def test_values_shifted_by_1024_are_refused(hu):
    with pytest.raises(DataError, match=r"^series 7: values are not Hounsfield units: .*; fix it"):
        check_hounsfield(hu, "series 7", "fix it")
