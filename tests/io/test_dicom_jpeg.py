"""JPEG-compressed series: JPEG Lossless decodes with the core install; a missing decoder is
an error naming the file, the transfer syntax and what to install."""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import numpy as np
import pydicom
import pydicom.pixels
import pytest
from pydicom.uid import (
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
)

import ctvoco.io.decoders as decoders
from ctvoco.errors import DataError
from ctvoco.io.dicom import read_dicom_series
from tests.io.jpeg_lossless_fixture import FOLDER, SPACING, expected_hu


@pytest.fixture
def jpeg_lossless_series(tmp_path):
    """A copy of the committed 3-slice JPEG Lossless SV1 series."""
    folder = tmp_path / "jpeg"
    shutil.copytree(FOLDER, folder)
    return folder


def test_fixture_is_jpeg_lossless_sv1(jpeg_lossless_series):
    syntaxes = {
        pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
        for p in jpeg_lossless_series.glob("*.dcm")
    }
    assert syntaxes == {JPEGLosslessSV1}


def test_jpeg_lossless_series_decodes_with_the_core_install(jpeg_lossless_series):
    volume = read_dicom_series(jpeg_lossless_series)
    np.testing.assert_array_equal(volume.hu, expected_hu())
    assert volume.spacing == pytest.approx(SPACING)


def _without_decoder(monkeypatch) -> None:
    """Make every compressed transfer syntax look as if no decoder plugin were installed."""
    missing = SimpleNamespace(is_available=False, missing_dependencies=["gdcm - requires gdcm"])
    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda syntax: missing)
    monkeypatch.setattr(decoders, "_USABLE_SYNTAXES", set())


@pytest.mark.parametrize(
    ("syntax", "install"),
    [
        pytest.param(JPEGLosslessSV1, "pip install python-gdcm", id="jpeg_lossless"),
        pytest.param(JPEGLSLossless, "pip install python-gdcm", id="jpeg_ls"),
        pytest.param(JPEG2000Lossless, "pip install python-gdcm", id="jpeg2000"),
        pytest.param(HTJ2KLossless, "pip install 'ctvoco[jpeg]'", id="htj2k"),
    ],
)
def test_missing_decoder_names_file_syntax_and_package(
    jpeg_lossless_series, monkeypatch, syntax, install
):
    paths = sorted(jpeg_lossless_series.glob("*.dcm"))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    _without_decoder(monkeypatch)
    with pytest.raises(DataError) as excinfo:
        read_dicom_series(jpeg_lossless_series)
    message = str(excinfo.value)
    assert any(message.startswith(f"{path}: ") for path in paths), message
    assert str(syntax) in message
    assert "no decoder plugin for it is installed" in message
    assert re.search(re.escape(install), message), message
