"""Which decoder turns a slice's compressed pixel data into stored values, and what to install.

RLE Lossless (RSNA's transfer syntax) decodes through pylibjpeg-rle; JPEG (baseline,
lossless, JPEG-LS) and JPEG 2000 through python-gdcm; high-throughput JPEG 2000 only through
pylibjpeg-openjpeg (the ``jpeg`` extra). docs/install.md explains the choice of decoders.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
from pydicom import uid

from ctvoco.errors import DataError

GDCM_SYNTAXES = frozenset(
    {
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
    }
)
"""Compressed syntaxes that python-gdcm (a core dependency) decodes."""

OPENJPEG_SYNTAXES = frozenset({uid.HTJ2K, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL})
"""High-throughput JPEG 2000: only pylibjpeg-openjpeg (the ``jpeg`` extra) decodes it."""

_USABLE_SYNTAXES: set[str] = set()
"""Compressed transfer syntaxes whose decoder was found available (checked once)."""


def sign_extend(
    values: np.ndarray, bits_allocated: int, bits_stored: int, signed: int
) -> np.ndarray:
    """Sign-extend signed values stored in fewer bits than allocated: ``(v << s) >> s``.

    Some RSNA files hold two's-complement values in ``BitsStored`` bits without extending
    the sign into the unused high bits. Idempotent on values that are already extended.

    Args:
        values: ``(H, W)`` stored values.
        bits_allocated: ``BitsAllocated`` (container width).
        bits_stored: ``BitsStored``.
        signed: ``PixelRepresentation`` (1 for two's complement).
    """
    shift = bits_allocated - bits_stored
    if not signed or shift <= 0:
        return values
    dtype = np.dtype(f"int{bits_allocated}")
    as_signed = values.astype(dtype, copy=False) if values.dtype != dtype else values
    return (as_signed << shift) >> shift


@functools.lru_cache(maxsize=32)
def available_plugins(syntax: pydicom.uid.UID) -> tuple[str, ...]:
    """The installed pydicom plugins that decode ``syntax`` (looked up once per syntax)."""
    decoder = pydicom.pixels.get_decoder(syntax)
    return tuple(decoder.available_plugins)


def require_decoder(path: Path, syntax: pydicom.uid.UID) -> None:
    """Stop unless some installed plugin decodes ``syntax``.

    Raises:
        DataError: Naming ``path``, the syntax and the package that decodes it.
    """
    if syntax in _USABLE_SYNTAXES:
        return
    try:
        decoder = pydicom.pixels.get_decoder(syntax)
    except NotImplementedError as exc:
        raise DataError(
            f"{path}: transfer syntax {syntax.name} ({syntax}) is not supported by pydicom"
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(str(m) for m in decoder.missing_dependencies) or "-"
        raise DataError(
            f"{path}: pixel data is {syntax.name} ({syntax}) and no decoder plugin for it is "
            f"installed ({missing}); {decoder_install_hint(syntax)}"
        )
    _USABLE_SYNTAXES.add(syntax)


def decoder_install_hint(syntax: pydicom.uid.UID) -> str:
    """What to install so that pydicom decodes ``syntax`` (docs/install.md, JPEG decoders)."""
    if syntax in GDCM_SYNTAXES:
        return (
            "python-gdcm, a ctvoco dependency, decodes it: pip install python-gdcm "
            "(or the GPL-3.0 pylibjpeg decoders: pip install 'ctvoco[jpeg]')"
        )
    if syntax in OPENJPEG_SYNTAXES:
        return "pylibjpeg-openjpeg decodes it: pip install 'ctvoco[jpeg]'"
    return "install a pydicom decoder plugin for it, e.g. pip install 'ctvoco[jpeg]'"
