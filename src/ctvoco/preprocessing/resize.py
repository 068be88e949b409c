"""Area (box-average) resizing of volumes, exact fractional weights, via OpenCV INTER_AREA."""

from __future__ import annotations

import cv2
import numpy as np

CV2_MAX_WIDTH = 32767


def area_resize(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Resize a ``(D, H, W)`` volume to ``shape`` by area averaging, separably.

    In-plane first (slice by slice), then along z. Downsampling averages every input voxel
    with its exact fractional overlap; upsampling falls back to OpenCV's area rule (bilinear).

    Args:
        volume: ``(D, H, W)`` uint8 or float array.
        shape: Target ``(d, h, w)``.

    Returns:
        ``(d, h, w)`` float32.
    """
    if volume.ndim != 3:
        raise ValueError(f"area_resize expects (D, H, W); got shape {volume.shape}")
    d, h, w = (int(s) for s in shape)
    if min(d, h, w) < 1:
        raise ValueError(f"target shape must be positive; got {shape}")
    depth = volume.shape[0]
    planes = np.empty((depth, h, w), dtype=np.float32)
    for z in range(depth):
        planes[z] = cv2.resize(
            volume[z].astype(np.float32, copy=False), (w, h), interpolation=cv2.INTER_AREA
        )
    if depth == d:
        return planes
    flat = planes.reshape(depth, h * w)
    if h * w <= CV2_MAX_WIDTH:
        out = cv2.resize(flat, (h * w, d), interpolation=cv2.INTER_AREA)
    else:  # keep OpenCV's image width within its limits by resizing column blocks
        out = np.empty((d, h * w), dtype=np.float32)
        for start in range(0, h * w, CV2_MAX_WIDTH):
            block = flat[:, start : start + CV2_MAX_WIDTH]
            out[:, start : start + block.shape[1]] = cv2.resize(
                np.ascontiguousarray(block), (block.shape[1], d), interpolation=cv2.INTER_AREA
            )
    return out.reshape(d, h, w)
