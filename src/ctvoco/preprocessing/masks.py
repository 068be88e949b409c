"""A series' organ mask taken through the geometry of its preprocessing.

The cached array of a series is its body block (the crop box of
:func:`~ctvoco.preprocessing.pipeline.preprocess_volume`) stretched to the cache shape, or
resampled to a target spacing and centre-cropped or padded. The mask follows the same
steps, with nearest-neighbour sampling instead of averaging (labels cannot be averaged),
so cached mask voxel ``(k, i, j)`` labels cached image voxel ``(k, i, j)``.
"""

from __future__ import annotations

import numpy as np

from ctvoco.preprocessing.body_crop import CropBox
from ctvoco.preprocessing.spacing import fit_to_shape, resampled_shape


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """For each of ``n_out`` output cells, the input cell under its centre.

    Output cell ``j`` covers ``[j, j + 1) * n_in / n_out`` in input units, like the cells of
    the area resize, so its centre ``(j + 0.5) * n_in / n_out`` falls in input cell
    ``floor`` of that.

    Returns:
        ``(n_out,)`` int64 indices in ``[0, n_in)``.
    """
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out)
    return np.minimum(np.floor(centres).astype(np.int64), n_in - 1)


def nearest_resize(labels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Resize a ``(D, H, W)`` label map to ``shape`` by nearest-neighbour sampling.

    Returns:
        ``shape`` array of the input's dtype, holding only labels of the input.
    """
    d, h, w = (nearest_indices(n, m) for n, m in zip(labels.shape, shape, strict=True))
    return np.ascontiguousarray(labels[d][:, h][:, :, w])


def preprocess_mask(
    labels: np.ndarray,
    box: CropBox,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
    target_spacing: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Crop, resize and fit a series' ``(D, H, W)`` label map as its image was.

    Args:
        labels: Canonical labels on the series' voxels.
        box: The series' crop box (source voxels).
        spacing: The series' ``(z, y, x)`` voxel size, mm.
        shape: The cache shape ``(D, H, W)``.
        target_spacing: The preprocessing's target spacing (``None``: stretched to ``shape``).

    Returns:
        ``shape`` uint8 labels, voxel for voxel on the cached image.
    """
    block = labels[box.slices]
    if target_spacing is None:
        return nearest_resize(block, shape).astype(np.uint8, copy=False)
    resampled = nearest_resize(block, resampled_shape(block.shape, spacing, target_spacing))
    return np.ascontiguousarray(fit_to_shape(resampled, shape).astype(np.uint8, copy=False))
