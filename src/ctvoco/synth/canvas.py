"""The volume being painted: voxel grid, HU and label maps, boxes and tube distance fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctvoco.synth.labels import INJURY_CODES
from ctvoco.synth.shapes import Ellipsoid, Tube, Vec3
from ctvoco.synth.tissues import AIR_HU, SOFT, THICK_WALL_HU


@dataclass(frozen=True, eq=False)
class Grid:
    """Voxel-centre coordinates (mm) of a ``(D, H, W)`` volume."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @classmethod
    def make(cls, shape: tuple[int, int, int], spacing: Vec3, z_offset_mm: float) -> Grid:
        (d, h, w), (sz, sy, sx) = shape, spacing
        return cls(
            (z_offset_mm + (np.arange(d) + 0.5) * sz).astype(np.float32),
            ((np.arange(h) + 0.5 - h / 2.0) * sy).astype(np.float32),
            ((np.arange(w) + 0.5 - w / 2.0) * sx).astype(np.float32),
        )

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice] | None:
        """Voxel slices ``(z, y, x)`` whose centres lie in ``[lo, hi]`` (``(x, y, z)`` mm)."""
        slices = []
        for axis, a, b in ((self.z, lo[2], hi[2]), (self.y, lo[1], hi[1]), (self.x, lo[0], hi[0])):
            i0 = int(np.searchsorted(axis, a, "left"))
            i1 = int(np.searchsorted(axis, b, "right"))
            if i1 <= i0:
                return None
            slices.append(slice(i0, i1))
        return slices[0], slices[1], slices[2]

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, ...]:
        """Broadcastable ``x (1, 1, w)``, ``y (1, h, 1)``, ``z (d, 1, 1)`` of a box."""
        return (
            self.x[box[2]][None, None, :],
            self.y[box[1]][None, :, None],
            self.z[box[0]][:, None, None],
        )


@dataclass(frozen=True, eq=False)
class Canvas:
    """The volume being painted: HU (float32), organ codes and injury codes."""

    grid: Grid
    hu: np.ndarray
    organs: np.ndarray
    injuries: np.ndarray

    @classmethod
    def empty(cls, grid: Grid) -> Canvas:
        shape = (len(grid.z), len(grid.y), len(grid.x))
        return cls(
            grid,
            np.full(shape, AIR_HU, dtype=np.float32),
            np.zeros(shape, dtype=np.uint8),
            np.zeros(shape, dtype=np.uint8),
        )

    def paint(
        self,
        box: tuple[slice, slice, slice],
        mask: np.ndarray,
        hu: float | np.ndarray,
        organ: int | np.ndarray | None = None,
        injury: int | None = None,
    ) -> None:
        """Set HU and codes (scalars or arrays broadcastable to the box) where ``mask``."""
        hu_box = self.hu[box]
        mask = np.broadcast_to(mask, hu_box.shape)
        if np.ndim(hu):
            hu_box[mask] = np.broadcast_to(hu, hu_box.shape)[mask]
        else:
            hu_box[mask] = hu
        if organ is not None:
            organ_box = self.organs[box]
            if np.ndim(organ):
                organ_box[mask] = np.broadcast_to(organ, organ_box.shape)[mask]
            else:
                organ_box[mask] = organ
        if injury is not None:
            self.injuries[box][mask] = injury

    def fat(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        """Fat voxels (soft tissue between -200 and -30 HU) of a box."""
        hu = self.hu[box]
        return (self.organs[box] == SOFT) & (hu > -200.0) & (hu < -30.0)


def ellipsoid_box(
    canvas: Canvas, e: Ellipsoid, pad: float = 1.0
) -> tuple[tuple[slice, slice, slice] | None, tuple[np.ndarray, ...]]:
    """The bounding box of an ellipsoid and its coordinates (empty arrays if it misses)."""
    ext = e.extent() * pad + 1.0
    box = canvas.grid.box(np.asarray(e.center) - ext, np.asarray(e.center) + ext)
    if box is None:
        empty = np.zeros((0, 0, 0), dtype=np.float32)
        return None, (empty, empty, empty)
    return box, canvas.grid.coords(box)


def _tube_field(
    canvas: Canvas, tube: Tube, margin: float = 1.0
) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
    """Distance field of a tube over its bounding box.

    Returns:
        ``(box, s, dy, position)``: ``s`` the distance to the centreline divided by the local
        radius (``< 1`` inside, ``inf`` far away), ``dy`` the ``y`` offset from the nearest
        centreline point (negative = anterior), ``position`` the fractional vertex index of
        that point. None if the tube misses the volume.
    """
    grid = canvas.grid
    pad = tube.radius.max() * margin + 1.0
    box = grid.box(tube.points.min(axis=0) - pad, tube.points.max(axis=0) + pad)
    if box is None:
        return None
    shape = tuple(s.stop - s.start for s in box)
    best = np.full(shape, np.inf, dtype=np.float32)
    best_dy = np.zeros(shape, dtype=np.float32)
    position = np.zeros(shape, dtype=np.float32)
    for i in range(len(tube.points) - 1):
        a, b = tube.points[i], tube.points[i + 1]
        r0, r1 = tube.radius[i], tube.radius[i + 1]
        seg_pad = max(r0, r1) * margin + 1.0
        sub = grid.box(np.minimum(a, b) - seg_pad, np.maximum(a, b) + seg_pad)
        if sub is None:
            continue
        x, y, z = grid.coords(sub)
        local = tuple(
            slice(s.start - o.start, s.stop - o.start) for s, o in zip(sub, box, strict=True)
        )
        d = (b - a).tolist()
        a = a.tolist()
        px, py, pz = x - a[0], y - a[1], z - a[2]
        inv_len2 = 1.0 / max(d[0] ** 2 + d[1] ** 2 + d[2] ** 2, 1e-9)
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) * inv_len2, 0.0, 1.0)
        ex, ey, ez = px - t * d[0], py - t * d[1], pz - t * d[2]
        s = np.sqrt(ex * ex + ey * ey + ez * ez) / (r0 + t * (r1 - r0))
        view = best[local]
        closer = s < view
        view[closer] = s[closer]
        best_dy[local][closer] = np.broadcast_to(ey, s.shape)[closer]
        position[local][closer] = (i + t)[closer]
    return box, best, best_dy, position


def paint_tube(
    canvas: Canvas,
    tube: Tube,
    *,
    lumen_hu: float,
    wall_hu: float,
    organ: int | None,
    hosts: Sequence[int] | None = None,
    injured: tuple[int, int] | None = None,
) -> None:
    """Paint a tube: wall, fluid lumen and gas; ``injured`` vertex range gets a thick wall."""
    field = _tube_field(canvas, tube)
    if field is None:
        return
    box, s, dy, position = field
    inside = s < 1.0
    if hosts is not None:
        inside &= np.isin(canvas.organs[box], hosts)
    pos = position[inside]
    vertex = np.arange(len(tube.points))
    radius = np.interp(pos, vertex, tube.radius)
    wall = np.interp(pos, vertex, tube.wall)
    lumen_radius = radius - wall
    lumen = s[inside] * radius < lumen_radius
    gas = lumen & (dy[inside] < -np.interp(pos, vertex, tube.gas) * lumen_radius)
    values = np.where(gas, AIR_HU, np.where(lumen, lumen_hu, wall_hu))
    if injured is not None:
        thick = ~lumen & (pos >= injured[0]) & (pos <= injured[1])
        values = np.where(thick, THICK_WALL_HU, values)
        injury_box = canvas.injuries[box]
        codes = injury_box[inside]
        codes[thick] = INJURY_CODES["bowel"]
        injury_box[inside] = codes
    canvas.hu[box][inside] = values
    if organ is not None:
        canvas.organs[box][inside] = organ
