"""HU windowing: map a fixed HU interval linearly onto uint8 ``[0, 255]``."""

from __future__ import annotations

import functools

import numpy as np

INT16_OFFSET = 32768


@functools.lru_cache(maxsize=16)
def window_lut(low: float, high: float) -> np.ndarray:
    """Lookup table from every int16 HU value to its windowed uint8 value.

    Indexed by ``hu.view(np.uint16)`` (two's complement order), so windowing an int16 volume
    is a single gather. Values are ``round(clip((hu - low) / (high - low), 0, 1) * 255)``.

    Returns:
        ``(65536,)`` uint8, read-only.
    """
    _check_window(low, high)
    hu = np.arange(65536, dtype=np.int64)
    hu = np.where(hu >= INT16_OFFSET, hu - 65536, hu).astype(np.float64)
    lut = np.rint(np.clip((hu - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def apply_window(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    """Window HU values to uint8 with fixed bounds (same intensity scale on every slice).

    Args:
        hu: HU array of any shape, int16 (fast lookup) or float.
        low: HU mapped to 0.
        high: HU mapped to 255.

    Returns:
        uint8 array of the same shape.
    """
    if hu.dtype == np.int16:
        return window_lut(float(low), float(high))[hu.view(np.uint16)]
    _check_window(low, high)
    scaled = (hu.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def apply_window_per_slice_minmax(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to the window, then stretch each slice by its own min/max (research-code scaling).

    Kept for reproducing the research configuration only: intensities are no longer
    comparable between slices (a slice without bone is stretched differently).

    Args:
        hu: ``(D, H, W)`` HU.

    Returns:
        ``(D, H, W)`` uint8.
    """
    _check_window(low, high)
    clipped = np.clip(hu.astype(np.float32), low, high)
    lo = clipped.min(axis=(1, 2), keepdims=True)
    span = clipped.max(axis=(1, 2), keepdims=True) - lo
    scaled = np.where(span > 0, (clipped - lo) / np.where(span > 0, span, 1.0), 0.0)
    return np.rint(scaled * 255.0).astype(np.uint8)


def windowed_threshold_hu(threshold: float, low: float, high: float) -> float:
    """The HU value whose windowed intensity equals ``threshold`` (0-255 scale)."""
    return low + threshold / 255.0 * (high - low)


def _check_window(low: float, high: float) -> None:
    if not high > low:
        raise ValueError(f"a window needs high > low; got [{low}, {high}]")
