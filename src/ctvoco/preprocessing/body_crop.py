"""Body crop: the box around the patient's body, excluding table, air and empty slices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MASK_MAX_SIDE = 64
"""The body mask is computed on a strided view whose larger in-plane side is at most this."""


@dataclass(frozen=True)
class CropBox:
    """Half-open voxel ranges ``[z0, z1) x [y0, y1) x [x0, x1)`` of a ``(D, H, W)`` volume."""

    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @classmethod
    def full(cls, shape: tuple[int, ...]) -> CropBox:
        """The box covering a whole ``(D, H, W)`` volume."""
        return cls(0, shape[-3], 0, shape[-2], 0, shape[-1])

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Index with ``volume[box.slices]``."""
        return slice(self.z0, self.z1), slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(d, h, w)`` of the cropped block."""
        return self.z1 - self.z0, self.y1 - self.y0, self.x1 - self.x0

    def __str__(self) -> str:
        return f"{self.z0}:{self.z1},{self.y0}:{self.y1},{self.x0}:{self.x1}"


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D boolean mask (empty mask stays empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def body_box(
    foreground: np.ndarray,
    *,
    stride: int = 1,
    margin: int = 4,
    min_area_fraction: float = 0.01,
) -> CropBox:
    """Bounding box of the body: per-slice largest component, boxes united over slices.

    Args:
        foreground: ``(D, h, w)`` boolean mask (windowed intensity above the body
            threshold), possibly a strided view of the full ``(D, H, W)`` volume.
        stride: In-plane stride of ``foreground`` relative to the full volume.
        margin: Margin added on each in-plane side, full-resolution voxels; at least
            ``stride - 1`` is added so the strided mask cannot cut the body's edge.
        min_area_fraction: Slices whose body covers less than this fraction of the slice
            are empty; leading and trailing empty slices are dropped.

    Returns:
        The crop box in full-resolution voxel coordinates (in-plane extent ``h*stride``,
        ``w*stride`` is clipped by the caller's volume size via :func:`clip_box`).

    Raises:
        ValueError: No slice contains a body.
    """
    depth, height, width = foreground.shape
    min_area = max(1, int(min_area_fraction * height * width))
    rows = np.zeros(height, dtype=bool)
    cols = np.zeros(width, dtype=bool)
    occupied = np.zeros(depth, dtype=bool)
    for z in range(depth):
        body = largest_component(foreground[z])
        if body.sum() < min_area:
            continue
        occupied[z] = True
        rows |= body.any(axis=1)
        cols |= body.any(axis=0)
    if not occupied.any():
        raise ValueError("no body found: every slice is empty after thresholding")
    margin = max(margin, stride - 1)
    z_idx = np.flatnonzero(occupied)
    r_idx, c_idx = np.flatnonzero(rows), np.flatnonzero(cols)
    return CropBox(
        int(z_idx[0]),
        int(z_idx[-1]) + 1,
        max(0, int(r_idx[0]) * stride - margin),
        (int(r_idx[-1]) + 1) * stride + margin,
        max(0, int(c_idx[0]) * stride - margin),
        (int(c_idx[-1]) + 1) * stride + margin,
    )


def clip_box(box: CropBox, shape: tuple[int, int, int]) -> CropBox:
    """Clip ``box`` to a ``(D, H, W)`` volume."""
    return CropBox(
        max(0, box.z0),
        min(shape[0], box.z1),
        max(0, box.y0),
        min(shape[1], box.y1),
        max(0, box.x0),
        min(shape[2], box.x1),
    )


def mask_stride(height: int, width: int, max_side: int = MASK_MAX_SIDE) -> int:
    """In-plane stride that brings the larger side to at most ``max_side``."""
    return max(1, -(-max(height, width) // max_side))
