"""Resampling a volume to a target voxel spacing, and fitting it to a fixed shape.

Used by ``preprocess.target_spacing``: the windowed body block is resampled so that every
voxel covers ``target`` millimetres (torch's bilinear interpolation with antialiasing, one
axis pair at a time, so shrinking averages and enlarging interpolates), then centre-cropped
or zero-padded to the cache shape instead of being stretched to it.

torch is imported on first use only: the default preprocessing (no target spacing) keeps
cache workers free of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHUNK_VOXELS = 1 << 24
"""Voxels interpolated per call (bounds the memory of one step, ~64 MB of float32)."""


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, int, int]:
    """``round(shape * spacing / target)`` per axis (at least 1): the same physical extent."""
    return tuple(  # type: ignore[return-value]
        max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True)
    )


def resample_to_spacing(
    volume: np.ndarray, spacing: Sequence[float], target: Sequence[float]
) -> np.ndarray:
    """Resample a ``(D, H, W)`` volume from ``spacing`` to ``target`` (both ``(z, y, x)`` mm).

    In-plane first (slice by slice), then along z; each pass is torch's ``bilinear``
    interpolation with ``antialias=True`` (area-like averaging when shrinking, linear when
    enlarging, ``align_corners=False``: voxel centres map to voxel centres).

    Args:
        volume: ``(D, H, W)`` uint8 or float array.
        spacing: Its voxel size, ``(z, y, x)`` mm.
        target: Wanted voxel size, ``(z, y, x)`` mm.

    Returns:
        ``(D', H', W')`` float32 with ``(D', H', W') * target ≈ (D, H, W) * spacing``.
    """
    if volume.ndim != 3:
        raise ValueError(f"resample_to_spacing expects (D, H, W); got shape {volume.shape}")
    depth, height, width = resampled_shape(volume.shape, spacing, target)
    planes = _resize_planes(np.asarray(volume, dtype=np.float32), (height, width))
    return _resize_depth(planes, depth)


def _resize_planes(volume: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(D, H, W)`` -> ``(D, *size)`` float32, a chunk of slices at a time."""
    d, h, w = volume.shape
    if (h, w) == size:
        return volume
    out = np.empty((d, *size), dtype=np.float32)
    step = max(1, CHUNK_VOXELS // max(1, h * w))
    for start in range(0, d, step):
        out[start : start + step] = _interpolate(volume[start : start + step, None], size)[:, 0]
    return out


def _resize_depth(volume: np.ndarray, depth: int) -> np.ndarray:
    """``(D, H, W)`` -> ``(depth, H, W)`` float32: each column resized as a ``(D, n)`` image."""
    d, h, w = volume.shape
    if d == depth:
        return volume
    columns = volume.reshape(d, h * w)
    out = np.empty((depth, h * w), dtype=np.float32)
    step = max(1, CHUNK_VOXELS // max(1, d))
    for start in range(0, h * w, step):
        block = columns[None, None, :, start : start + step]
        out[:, start : start + step] = _interpolate(block, (depth, block.shape[-1]))[0, 0]
    return out.reshape(depth, h, w)


def _interpolate(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torch bilinear resize with antialiasing of ``(N, C, h, w)`` to ``(N, C, *size)``."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        resized = F.interpolate(
            tensor, size=size, mode="bilinear", align_corners=False, antialias=True
        )
    return resized.numpy()


def fit_to_shape(volume: np.ndarray, shape: Sequence[int], fill: float = 0.0) -> np.ndarray:
    """Centre-crop or pad (with ``fill``) a ``(D, H, W)`` volume to ``shape``, per axis.

    Where an axis is longer than wanted, the middle part is kept (one voxel more is cut at
    the end when the excess is odd); where shorter, ``fill`` is added on both sides (one
    more after).
    """
    out = np.full(tuple(int(s) for s in shape), fill, dtype=volume.dtype)
    source, target = [], []
    for have, want in zip(volume.shape, out.shape, strict=True):
        keep = min(have, want)
        start_in, start_out = (have - keep) // 2, (want - keep) // 2
        source.append(slice(start_in, start_in + keep))
        target.append(slice(start_out, start_out + keep))
    out[tuple(target)] = volume[tuple(source)]
    return out
