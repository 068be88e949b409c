"""Overlap targets between random crops and the base-crop grid (VoCo position labels).

A pretraining canvas is ``n*r`` pixels on each in-plane side and is cut into an
``n x n`` grid of *base crops* of ``r x r`` pixels. Base cell ``j = n*row + col``
covers rows ``[row*r, (row+1)*r)`` and columns ``[col*r, (col+1)*r)``.

A *random crop* is given by its integer centre ``(cy, cx)`` on the canvas. The
crop covers rows ``[cy - r//2, cy - r//2 + r)`` and the same for columns, i.e.
the centre is the pixel at offset ``r//2`` inside the crop. For odd ``r`` that is
the true middle pixel; for even ``r`` it is the pixel just below/right of the
geometric centre (the geometric centre lies on a pixel corner). One convention,
used by :func:`crop_starts`, :func:`valid_center_range`, :func:`sample_center_range`,
:func:`overlap_targets` and :func:`sample_random_centers` alike.

Two ranges of centres (per axis, row and column alike):

- *valid*: the whole crop lies inside the canvas, ``r//2 <= c <= n*r - r + r//2``
  (:func:`valid_center_range`, inclusive). :func:`overlap_targets` accepts any valid centre.
- *sampled*: random crops draw their integer centre uniformly from the half-open
  interval ``[r/2, n*r - r/2)`` (docs/algorithms.md §2.1), i.e. the integers
  ``ceil(r/2) <= c < n*r - r//2`` (:func:`sample_center_range`). That is ``n*r - r``
  positions, one fewer than the valid ones: for even ``r`` (the research code's ``r=64``) the
  bottom/right-most crop (``c = n*r - r/2``) is never drawn; for odd ``r`` the
  top/left-most (``c = r//2``) is not. With ``n = 1`` the interval is empty, so random
  crops need ``n >= 2``.

Reference: Wu, Zhuang, Xu, Chen, "VoCo: A Simple-yet-Effective Volume Contrastive
Learning Framework for 3D Medical Image Analysis", CVPR 2024; 2D-VoCo, arXiv 2601.14593.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "crop_starts",
    "overlap_targets",
    "sample_center_range",
    "sample_random_centers",
    "valid_center_range",
]


def _check_grid(n: int, r: int) -> None:
    for name, value in (("n", n), ("r", r)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")


def valid_center_range(n: int, r: int) -> tuple[int, int]:
    """Inclusive range of integer crop centres whose ``r x r`` crop lies inside the canvas.

    Args:
        n: Grid size (the canvas is ``n*r`` pixels on each side).
        r: Crop size in pixels.

    Returns:
        ``(lo, hi)`` with ``lo = r//2`` and ``hi = n*r - r + r//2``; a centre ``c`` is valid
        iff ``lo <= c <= hi`` (for each of row and column).

    Raises:
        ValueError: If ``n`` or ``r`` is not a positive integer.
    """
    _check_grid(n, r)
    return r // 2, n * r - r + r // 2


def sample_center_range(n: int, r: int) -> tuple[int, int]:
    """Half-open range ``[lo, hi)`` of the integer centres random crops are drawn from.

    The integers in ``[r/2, n*r - r/2)``: ``lo = ceil(r/2)``, ``hi = n*r - r//2``
    (exclusive), ``n*r - r`` positions, all of them valid (see the module docstring).

    Args:
        n: Grid size (the canvas is ``n*r`` pixels on each side).
        r: Crop size in pixels.

    Returns:
        ``(lo, hi)``; a centre ``c`` may be drawn iff ``lo <= c < hi`` (row and column alike).
        Empty (``lo == hi``) for ``n = 1``.

    Raises:
        ValueError: If ``n`` or ``r`` is not a positive integer.
    """
    _check_grid(n, r)
    return (r + 1) // 2, n * r - r // 2


def crop_starts(random_centers: Any, r: int) -> Any:
    """Top-left pixel of each crop: ``center - r//2`` (same kind and shape as the input).

    Args:
        random_centers: Integer centres, numpy array or torch tensor of shape ``(..., 2)``.
        r: Crop size in pixels.

    Returns:
        ``random_centers - r // 2``, so crop ``k`` covers ``[start, start + r)`` per axis.
    """
    _check_grid(1, r)
    return random_centers - r // 2


def _as_center_tensor(random_centers: Any) -> Tensor:
    centers = torch.as_tensor(random_centers)
    if centers.dtype == torch.bool or centers.is_complex():
        raise ValueError(f"random_centers must hold integers; got dtype {centers.dtype}")
    if centers.is_floating_point():
        if not torch.equal(centers, centers.round()):
            raise ValueError("random_centers must hold integer values; got non-integral floats")
        centers = centers.round()
    return centers.to(torch.int64)


def overlap_targets(random_centers: Any, n: int, r: int) -> Tensor:
    """Fraction of each random crop that falls in each base cell.

    ``y[..., k, j] = area(random_k ∩ base_j) / r²`` with base cell ``j = n*row + col``
    (see the module docstring for the centre convention). Every row sums to 1 because a
    valid crop lies entirely inside the canvas. Fully vectorised: the 2D overlap is the
    product of the row and column 1D overlaps.

    Args:
        random_centers: Integer ``(row, col)`` centres, shape ``(K, 2)`` or batched
            ``(B, K, 2)``; torch tensor, numpy array or nested sequence. Floats are accepted
            only when integral.
        n: Grid size; there are ``n*n`` base cells.
        r: Crop (and base cell) size in pixels.

    Returns:
        ``torch.float32`` tensor of shape ``(K, n*n)`` or ``(B, K, n*n)``, on the input's
        device when the input is a tensor.

    Raises:
        ValueError: If the shape is not ``(K, 2)`` / ``(B, K, 2)``, the values are not
            integers, or a crop would leave the canvas.

    Reference: Wu et al., "VoCo", CVPR 2024; 2D-VoCo, arXiv 2601.14593 (docs/algorithms.md §2.1).
    """
    lo, hi = valid_center_range(n, r)
    centers = _as_center_tensor(random_centers)
    if centers.ndim not in (2, 3) or centers.shape[-1] != 2:
        raise ValueError(f"random_centers must be (K, 2) or (B, K, 2); got {tuple(centers.shape)}")
    bad = (centers < lo) | (centers > hi)
    if bad.any():
        first = centers[bad.any(dim=-1)][0].tolist()
        raise ValueError(
            f"random_centers must lie in [{lo}, {hi}] (inclusive) so that the {r}x{r} crop "
            f"stays inside the {n * r}x{n * r} canvas; got centre {first}"
        )
    starts = crop_starts(centers, r).unsqueeze(-1)  # (..., K, 2, 1)
    cell_starts = torch.arange(n, device=centers.device, dtype=torch.int64) * r  # (n,)
    overlap_1d = (
        torch.minimum(starts + r, cell_starts + r) - torch.maximum(starts, cell_starts)
    ).clamp_min(0)  # (..., K, 2, n): pixels shared with each grid row / column
    rows, cols = overlap_1d[..., 0, :], overlap_1d[..., 1, :]
    area = rows.unsqueeze(-1) * cols.unsqueeze(-2)  # (..., K, n, n), row-major = n*row + col
    area = area.reshape(*area.shape[:-2], n * n)
    return (area.to(torch.float64) / (r * r)).to(torch.float32)


def sample_random_centers(generator: np.random.Generator, k: int, n: int, r: int) -> np.ndarray:
    """Draw ``k`` crop centres uniformly from ``[r/2, n*r - r/2)`` (§2.1).

    Row and column are independent and uniform over the half-open range of
    :func:`sample_center_range`, so each of its ``(n*r - r)²`` centres is equally likely.

    Args:
        generator: Seeded ``numpy.random.Generator`` (reproducible workers).
        k: Number of random crops (``K``), ``>= 0``.
        n: Grid size.
        r: Crop size in pixels.

    Returns:
        ``int64`` array of shape ``(k, 2)`` with ``(row, col)`` centres.

    Raises:
        TypeError: If ``generator`` is not a ``numpy.random.Generator``.
        ValueError: If ``k``, ``n`` or ``r`` is invalid, or ``n = 1`` (no centre to draw).
    """
    if not isinstance(generator, np.random.Generator):
        raise TypeError(
            f"generator must be a numpy.random.Generator; got {type(generator).__name__}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer; got {k!r}")
    lo, hi = sample_center_range(n, r)
    if lo >= hi:
        raise ValueError(
            f"random crops need a grid of at least 2x2: the centre range [r/2, n*r - r/2) is "
            f"empty for n={n}, r={r}"
        )
    return generator.integers(lo, hi, size=(int(k), 2), dtype=np.int64)
