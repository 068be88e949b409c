"""Area (box-average) resizing of volumes with exact fractional weights.

Separable: along z first (each output slice is the overlap-weighted mean of the 1-3 input
slices it covers), then in-plane slice by slice with OpenCV's ``INTER_AREA``. Reducing the
depth first means the in-plane pass touches only the output slices.
"""

from __future__ import annotations

import functools

import numpy as np

from ctvoco.opencv import cv2

CV2_MAX_WIDTH = 32767


@functools.lru_cache(maxsize=64)
def area_taps(n_in: int, n_out: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """For each output cell, the input indices it overlaps and their normalised weights.

    Output cell ``j`` covers ``[j * n_in / n_out, (j + 1) * n_in / n_out)`` in input units;
    input ``k`` covers ``[k, k + 1)``; the weight is the overlap length.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    taps = []
    for j in range(n_out):
        lo, hi = edges[j], edges[j + 1]
        ks = np.arange(int(np.floor(lo)), min(n_in, int(np.ceil(hi))))
        weights = np.minimum(hi, ks + 1) - np.maximum(lo, ks)
        keep = weights > 1e-9
        ks, weights = ks[keep], weights[keep]
        taps.append((ks, (weights / weights.sum()).astype(np.float32)))
    return tuple(taps)


def _resize_depth(volume: np.ndarray, depth: int) -> np.ndarray:
    """``(D, H, W)`` -> ``(depth, H, W)`` float32: exact area weights when shrinking,
    OpenCV's linear rule when enlarging."""
    d, h, w = volume.shape
    if depth == d:
        return volume.astype(np.float32, copy=False)
    if depth < d:
        out = np.empty((depth, h, w), dtype=np.float32)
        for j, (ks, weights) in enumerate(area_taps(d, depth)):
            acc = out[j]
            np.multiply(volume[ks[0]], weights[0], out=acc, dtype=np.float32, casting="unsafe")
            for k, weight in zip(ks[1:], weights[1:], strict=True):
                acc += volume[k] * weight
        return out
    flat = volume.reshape(d, h * w).astype(np.float32, copy=False)
    out = np.empty((depth, h * w), dtype=np.float32)
    for start in range(0, h * w, CV2_MAX_WIDTH):  # OpenCV images are at most 32767 wide
        block = np.ascontiguousarray(flat[:, start : start + CV2_MAX_WIDTH])
        out[:, start : start + block.shape[1]] = cv2.resize(
            block, (block.shape[1], depth), interpolation=cv2.INTER_AREA
        )
    return out.reshape(depth, h, w)


def area_resize(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Resize a ``(D, H, W)`` volume to ``shape`` by area averaging, separably.

    Downsampling averages every input voxel with its exact fractional overlap; upsampling
    falls back to OpenCV's area rule (bilinear).

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
    planes = _resize_depth(volume, d)
    if planes.shape[1:] == (h, w):
        return planes
    out = np.empty((d, h, w), dtype=np.float32)
    for z in range(d):
        out[z] = cv2.resize(planes[z], (w, h), interpolation=cv2.INTER_AREA)
    return out
