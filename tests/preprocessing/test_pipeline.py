"""Tests for ctvoco.preprocessing.pipeline: preprocess_series end to end, PreprocessConfig."""

from __future__ import annotations

import json
import os
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from ctvoco.errors import DataError, UserError
from ctvoco.io.nifti import write_nifti
from ctvoco.io.volume import CTVolume
from ctvoco.preprocessing.body_crop import CropBox
from ctvoco.preprocessing.pipeline import (
    ALGORITHM_VERSION,
    FLARE_WINDOW,
    RSNA_WINDOW,
    PreprocessConfig,
    load_volume,
    preprocess_series,
    preprocess_volume,
)
from ctvoco.synth.dicom_writer import SeriesTags, new_uid, write_dicom_series
from tests.conftest import small_phantom

SHAPE = (12, 48, 56)
SPACING = (2.5, 0.8, 0.7)
SMALL = (8, 32, 32)


def volume_of(hu: np.ndarray, source: str = "phantom") -> CTVolume:
    return CTVolume(hu=hu, spacing=SPACING, source=source)


# ------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("in_shape", [SHAPE, (20, 40, 36)])
def test_default_output(in_shape):
    out = preprocess_series(small_phantom(in_shape))
    assert out.shape == (96, 256, 256)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    assert out.max() == 255  # the spine saturates the window
    assert out.min() == 0


def test_several_windows():
    windows = [RSNA_WINDOW, (-1000.0, 1000.0), FLARE_WINDOW]
    out = preprocess_series(small_phantom(), windows=windows, shape=SMALL)
    assert out.shape == (3, *SMALL)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    # channel 0 is the single-window result (the crop is computed on the first window)
    np.testing.assert_array_equal(out[0], preprocess_series(small_phantom(), shape=SMALL))
    assert not np.array_equal(out[0], out[1])
    # a wider window gives lower contrast on soft tissue
    assert out[1].std() < out[0].std()


def test_per_slice_minmax_differs_from_fixed():
    hu = small_phantom()
    # caudal slices without bone: per-slice scaling stretches their soft tissue to white
    hu[6:] = np.minimum(hu[6:], 100)
    shape = (12, 32, 32)  # no resize along z: slice z of the output is slice z of the input
    fixed = preprocess_series(hu, shape=shape)
    minmax = preprocess_series(hu, shape=shape, scaling="per_slice_minmax")
    assert minmax.dtype == np.uint8
    assert minmax.shape == shape
    # slices with air and bone span the whole window either way
    np.testing.assert_array_equal(minmax[:6], fixed[:6])
    assert minmax[6:].max() > fixed[6:].max() + 50
    assert fixed[6:].max() <= 160


def _bbox(mask: np.ndarray) -> list[tuple[int, int]]:
    return [(int(idx.min()), int(idx.max())) for idx in np.nonzero(mask)]


def test_body_crop_keeps_the_body_where_it_is():
    config = PreprocessConfig(shape=(12, 40, 48))
    with_all = preprocess_volume(volume_of(small_phantom()), config)
    # the table is not part of the crop: removing it changes nothing
    no_table = preprocess_volume(volume_of(small_phantom(table=False)), config)
    np.testing.assert_array_equal(with_all.array, no_table.array)
    assert with_all.crop_box == no_table.crop_box
    box = with_all.crop_box
    assert box.y1 <= int(0.9 * SHAPE[1])
    assert (box.z0, box.z1) == (0, SHAPE[0])
    # the right-side marker ends up in the left part of the columns, mid-height
    no_right = preprocess_volume(volume_of(small_phantom(right_marker=False)), config).array
    (z0, z1), (y0, y1), (x0, x1) = _bbox(with_all.array != no_right)
    assert (z0, z1) == (0, 11)
    assert x1 < 48 * 0.35
    assert y0 > 40 * 0.2 and y1 < 40 * 0.8
    # the cranial marker stays in the first slices
    no_cranial = preprocess_volume(volume_of(small_phantom(cranial_marker=False)), config).array
    (z0, z1), _, (x0, x1) = _bbox(with_all.array != no_cranial)
    assert z1 <= 2
    assert x0 > 48 * 0.5
    # the spine (saturated) is posterior: in the lower half of the rows
    rows = np.nonzero(with_all.array == 255)[1]
    assert rows.mean() > 40 / 2


def test_body_crop_box_and_full():
    hu = small_phantom()
    cropped = preprocess_volume(volume_of(hu), PreprocessConfig(shape=SMALL))
    full = preprocess_volume(volume_of(hu), PreprocessConfig(shape=SMALL, body_crop=False))
    assert full.crop_box == CropBox.full(hu.shape)
    assert cropped.crop_box != full.crop_box
    assert cropped.crop_box.shape[1] < SHAPE[1]
    assert not np.array_equal(cropped.array, full.array)
    # without the crop the table is in the picture: its rows show up at the bottom
    assert full.array[:, -4:].max() > 0


def test_result_carries_volume_and_warnings():
    volume = CTVolume(hu=small_phantom(), spacing=SPACING, source="x", warnings=["a gap"])
    result = preprocess_volume(volume, PreprocessConfig(shape=SMALL))
    assert result.volume is volume
    assert result.warnings == ["a gap"]
    result.warnings.append("more")
    assert volume.warnings == ["a gap"]


def test_float_volume_matches_int16():
    hu = small_phantom()
    as_int = preprocess_series(hu, shape=SMALL)
    as_float = preprocess_series(hu.astype(np.float32), shape=SMALL)
    np.testing.assert_array_equal(as_int, as_float)


# ------------------------------------------------------------------------ sources


def write_sources(tmp_path: Path, hu: np.ndarray) -> dict[str, object]:
    tags = SeriesTags("P1", new_uid("pipeline-series"), new_uid("pipeline-study"))
    dicom = tmp_path / "dicom" / "1" / "2"
    write_dicom_series(hu, dicom, SPACING, tags, shuffle_names=np.random.default_rng(0))
    nifti = write_nifti(hu, tmp_path / "case_0000.nii.gz", SPACING)
    return {
        "dicom_folder": dicom,
        "dicom_folder_str": str(dicom),
        "nifti": nifti,
        "nifti_str": str(nifti),
        "volume": volume_of(hu),
        "array": hu,
    }


def test_sources_give_the_same_array(tmp_path):
    hu = small_phantom()
    sources = write_sources(tmp_path, hu)
    expected = preprocess_series(hu, shape=SMALL)
    assert expected.shape == SMALL
    for name, source in sources.items():
        out = preprocess_series(source, shape=SMALL)
        np.testing.assert_array_equal(out, expected, err_msg=name)


def test_one_slice_sources_give_the_same_array(tmp_path):
    """A one-slice DICOM series and a one-slice NIfTI volume are both preprocessed."""
    hu = small_phantom()[5:6]
    sources = write_sources(tmp_path, hu)
    expected = preprocess_series(hu, shape=SMALL)
    assert expected.shape == SMALL
    for name in ("dicom_folder", "nifti"):
        out = preprocess_series(sources[name], shape=SMALL)
        np.testing.assert_array_equal(out, expected, err_msg=name)


def test_overrides_and_config(tmp_path):
    hu = small_phantom()
    config = PreprocessConfig(shape=SMALL, windows=[FLARE_WINDOW])
    a = preprocess_series(hu, config)
    b = preprocess_series(hu, shape=SMALL, windows=[FLARE_WINDOW])
    c = preprocess_series(hu, PreprocessConfig(), shape=SMALL, windows=FLARE_WINDOW)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, preprocess_series(hu, config, windows=[RSNA_WINDOW]))


def test_override_validated():
    with pytest.raises(UserError, match=r"preprocess\.scaling"):
        preprocess_series(small_phantom(), scaling="nope")


def test_load_volume_sources(tmp_path):
    hu = small_phantom()
    sources = write_sources(tmp_path, hu)
    volume = sources["volume"]
    assert load_volume(volume) is volume
    from_array = load_volume(hu)
    assert from_array.spacing == (1.0, 1.0, 1.0)
    assert from_array.source == "<array>"
    from_dicom = load_volume(sources["dicom_folder"])
    assert from_dicom.patient_id == "P1"
    assert from_dicom.spacing == pytest.approx(SPACING)
    from_nifti = load_volume(sources["nifti"])
    assert from_nifti.series_id == "case"
    np.testing.assert_array_equal(from_nifti.hu, hu)


def bad_source(tmp_path: Path, name: str) -> Path:
    """A path that is not a usable series, by kind."""
    if name == "text_file":
        (tmp_path / "notes.txt").write_text("x")
        return tmp_path / "notes.txt"
    if name == "empty_folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    return tmp_path / {"missing": "missing", "missing_nifti": "gone.nii.gz"}[name]


BAD_SOURCES = [
    ("missing", r"missing: no such file or directory"),
    ("missing_nifti", r"gone\.nii\.gz: not a readable NIfTI"),
    ("text_file", r"notes\.txt: expected a DICOM series folder or a \.nii/\.nii\.gz file"),
    ("empty_folder", r"empty: contains no DICOM"),
]


@pytest.mark.parametrize(("name", "match"), BAD_SOURCES, ids=[c[0] for c in BAD_SOURCES])
def test_bad_sources(tmp_path, name, match):
    source = bad_source(tmp_path, name)
    with pytest.raises(DataError, match=match):
        load_volume(source)
    with pytest.raises(DataError, match=match):
        preprocess_series(source, shape=SMALL)


def test_all_air_series_names_the_source(tmp_path):
    air = np.full(SHAPE, -1000, dtype=np.int16)
    path = write_nifti(air, tmp_path / "air_0000.nii.gz", SPACING)
    with pytest.raises(DataError, match=r"air_0000\.nii\.gz: no body found"):
        preprocess_series(path, shape=SMALL)


# ------------------------------------------------------------------ configuration


def test_config_defaults():
    config = PreprocessConfig()
    assert config.windows == (RSNA_WINDOW,)
    assert config.shape == (96, 256, 256)
    assert config.scaling == "fixed"
    assert config.body_crop is True
    assert config.channels == 1
    assert config.output_shape == (96, 256, 256)


# (name, kwargs, expected windows)
WINDOW_FORMS = [
    ("one_pair_tuple", {"windows": (-150, 250)}, ((-150.0, 250.0),)),
    ("one_pair_list", {"windows": [-150, 250.5]}, ((-150.0, 250.5),)),
    ("list_of_pairs", {"windows": [[-150, 250], [-175, 250]]}, ((-150.0, 250.0), (-175.0, 250.0))),
    ("tuple_of_one_pair", {"windows": ((-150, 250),)}, ((-150.0, 250.0),)),
]


@pytest.mark.parametrize(
    ("kwargs", "expected"), [c[1:] for c in WINDOW_FORMS], ids=[c[0] for c in WINDOW_FORMS]
)
def test_config_window_forms(kwargs, expected):
    config = PreprocessConfig(**kwargs)
    assert config.windows == expected
    assert all(isinstance(v, float) for w in config.windows for v in w)
    assert config.channels == len(expected)
    assert config.output_shape == (
        (96, 256, 256) if len(expected) == 1 else (len(expected), 96, 256, 256)
    )


# (name, kwargs, message)
BAD_CONFIGS = [
    ("reversed_window", {"windows": [(250, -150)]}, "high > low"),
    ("empty_window", {"windows": [(100, 100)]}, "high > low"),
    ("second_window_bad", {"windows": [(-150, 250), (10, 0)]}, "high > low"),
    ("no_windows", {"windows": []}, r"preprocess\.windows"),
    ("window_triple", {"windows": [(1, 2, 3)]}, r"preprocess\.windows"),
    ("window_text", {"windows": "wide"}, r"preprocess\.windows"),
    ("window_none", {"windows": None}, r"preprocess\.windows"),
    ("two_sizes", {"shape": (96, 256)}, r"preprocess\.shape"),
    ("four_sizes", {"shape": (1, 96, 256, 256)}, r"preprocess\.shape"),
    ("zero_size", {"shape": (0, 256, 256)}, r"preprocess\.shape"),
    ("negative_size", {"shape": (96, -1, 256)}, r"preprocess\.shape"),
    ("scalar_shape", {"shape": 256}, r"preprocess\.shape"),
    ("text_shape", {"shape": ("a", 256, 256)}, r"preprocess\.shape"),
    (
        "unknown_scaling",
        {"scaling": "minmax"},
        r"preprocess\.scaling must be one of fixed, per_slice_minmax",
    ),
    ("threshold_255", {"body_threshold": 255}, r"preprocess\.body_threshold"),
    ("threshold_negative", {"body_threshold": -1}, r"preprocess\.body_threshold"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    BAD_CONFIGS,
    ids=[c.values[0] if hasattr(c, "values") else c[0] for c in BAD_CONFIGS],
)
def test_bad_config(name, kwargs, match):
    with pytest.raises(UserError, match=match):
        PreprocessConfig(**kwargs)


def test_from_mapping():
    config = PreprocessConfig.from_mapping(
        {"windows": [[-150, 250], [-175, 250]], "shape": [8, 32, 32], "scaling": "per_slice_minmax"}
    )
    assert config.windows == ((-150.0, 250.0), (-175.0, 250.0))
    assert config.shape == (8, 32, 32)
    assert config.output_shape == (2, 8, 32, 32)
    assert PreprocessConfig.from_mapping(None) == PreprocessConfig()
    assert PreprocessConfig.from_mapping({}) == PreprocessConfig()


def test_from_mapping_unknown_key():
    with pytest.raises(UserError, match=r"unknown preprocess option\(s\) spacing, windw; known: "):
        PreprocessConfig.from_mapping({"windw": [-150, 250], "spacing": 1, "shape": [8, 8, 8]})


def test_from_mapping_bad_value():
    with pytest.raises(UserError, match=r"preprocess\.shape"):
        PreprocessConfig.from_mapping({"shape": [8, 8]})


# field -> a different valid value
CHANGED_FIELDS = {
    "windows": ((-175.0, 250.0),),
    "shape": (64, 192, 192),
    "scaling": "per_slice_minmax",
    "body_crop": False,
    "body_threshold": 20.0,
    "margin": 8,
    "min_body_fraction": 0.05,
    "target_spacing": (3.0, 1.5, 1.5),
}


def test_changed_fields_cover_every_field():
    assert set(CHANGED_FIELDS) == {f.name for f in fields(PreprocessConfig)}


@pytest.mark.parametrize(("field", "value"), list(CHANGED_FIELDS.items()))
def test_fingerprint_changes_with_each_field(field, value):
    base = PreprocessConfig()
    changed = replace(base, **{field: value})
    assert changed.fingerprint() != base.fingerprint()
    assert changed.fingerprint()[field] != base.fingerprint()[field]
    json.dumps(changed.fingerprint())  # plain JSON-able values


def test_fingerprint_content():
    fp = PreprocessConfig().fingerprint()
    assert fp["windows"] == [[-150.0, 250.0]]
    assert fp["shape"] == [96, 256, 256]
    assert fp["algorithm_version"] == ALGORITHM_VERSION
    # equal configs written differently give the same fingerprint
    assert PreprocessConfig(windows=(-150, 250), shape=[96, 256, 256]).fingerprint() == fp
    assert json.loads(json.dumps(fp)) == fp


VARIANT_NAMES = [
    ({}, "1w_contour_96x256x256"),
    ({"shape": (64, 192, 192)}, "1w_contour_64x192x192"),
    ({"windows": [RSNA_WINDOW, FLARE_WINDOW]}, "2w_contour_96x256x256"),
    ({"body_crop": False}, "1w_full_96x256x256"),
    ({"scaling": "per_slice_minmax"}, "1w_contour_96x256x256_minmax"),
    (
        {
            "windows": [RSNA_WINDOW, FLARE_WINDOW, (-1000, 1000)],
            "body_crop": False,
            "shape": (8, 32, 32),
        },
        "3w_full_8x32x32",
    ),
]


@pytest.mark.parametrize(("kwargs", "expected"), VARIANT_NAMES)
def test_variant_name(kwargs, expected):
    assert PreprocessConfig(**kwargs).variant_name() == expected


# ---------------------------------------------------------------- real data (opt-in)


def test_real_ct_through_dicom(tmp_path):
    """A real RSNA series (already cached as uint8) written as DICOM and preprocessed again.

    The file is windowed [-150, 250] -> 0..255, 96 x 256 x 256, with an identity affine that
    does not describe the anatomy, so it is not read with read_nifti (which would trust the
    affine as RAS and put the pelvis first). The data README says "axes x, y, z = columns,
    rows, slices; slice 0 is the chest end". Slice 0 is indeed the chest end, but the pixels
    show that the in-plane axes are not (columns, rows): viewed as ``data.transpose(2, 1, 0)``
    the spine is at the left edge and the anterior wall at the right. The anatomy (spine
    posterior, liver on the patient's right, heart apex and descending aorta on the patient's
    left) fixes the canonical (D, H, W) array as ``data.transpose(2, 0, 1)[:, ::-1, ::-1]``:
    nibabel axis 0 runs posterior -> anterior and axis 1 runs patient left -> right. The
    correlation check below does not depend on this choice; the bone check does.
    """
    path = os.environ.get("CTVOCO_REAL_CT")
    if not path:
        pytest.skip(
            "CTVOCO_REAL_CT not set: point it to a real windowed RSNA volume such as "
            "rsna_19_14374_contour96x256x256.nii.gz to run this test"
        )
    import nibabel as nib

    image = nib.load(path)
    data = np.asarray(image.dataobj)
    assert data.shape == (256, 256, 96), data.shape
    assert data.dtype == np.uint8
    canonical = np.ascontiguousarray(data.transpose(2, 0, 1)[:, ::-1, ::-1])
    # anatomy check of the chosen orientation: bone (saturated) lies in the posterior half
    bone_rows = np.nonzero(canonical[20:70] == 255)[1]
    assert bone_rows.mean() > 256 * 0.55
    # undo the window: v = round((hu + 150) / 400 * 255)
    hu = np.rint(canonical.astype(np.float64) / 255.0 * 400.0 - 150.0).astype(np.int16)
    tags = SeriesTags("19", new_uid("rsna-19-14374"), new_uid("rsna-19"))
    folder = tmp_path / "19" / "14374"
    write_dicom_series(hu, folder, (2.0, 0.8, 0.8), tags, shuffle_names=np.random.default_rng(0))

    config = PreprocessConfig(shape=(96, 256, 256))
    result = preprocess_volume(load_volume(folder), config)
    np.testing.assert_array_equal(result.volume.hu, hu)
    assert result.array.shape == (96, 256, 256)
    # the source was already body-cropped: the new crop is close to the whole volume
    box = result.crop_box
    assert box.shape[0] >= 90
    assert box.shape[1] >= 0.85 * 256 and box.shape[2] >= 0.85 * 256
    r = np.corrcoef(result.array.ravel().astype(np.float64), canonical.ravel().astype(np.float64))[
        0, 1
    ]
    assert r > 0.9, r
    # without the crop the round trip is exact (window(unwindow(v)) == v)
    full = preprocess_volume(result.volume, replace(config, body_crop=False)).array
    np.testing.assert_array_equal(full, canonical)
