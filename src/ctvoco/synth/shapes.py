"""Geometric primitives of the phantom: rotated lobulated ellipsoids and swept tubes.

Coordinates are millimetres in the scanner frame: ``x`` grows towards the patient's LEFT,
``y`` towards POSTERIOR, ``z`` towards CAUDAL (feet). The functions are vectorised over
broadcastable coordinate arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Vec3 = tuple[float, float, float]
"""A point or size ``(x, y, z)`` in millimetres (scanner frame, see the module docstring)."""


Lobe = tuple[float, float, float, float, float, float]
"""A surface lobulation term ``(nx, ny, nz, frequency, phase, amplitude)`` of an ellipsoid."""


@dataclass(frozen=True)
class Ellipsoid:
    """A rotated, optionally lobulated ellipsoid.

    A point ``p`` has local coordinates ``q = R.T @ (p - center)`` with
    ``R = Rz(az) @ Ry(ay) @ Rx(ax)``; it is inside when ``|q / half_axes| <= 1 + lobulation``.

    Attributes:
        center: ``(x, y, z)`` mm.
        half_axes: Half-lengths along the local axes, mm.
        angles: ``(az, ay, ax)`` rotation angles in degrees.
        lobes: Surface lobulation terms; each adds ``amp * cos(freq * (u . n) + phase)`` to the
            radius, ``u`` the normalised local position.
    """

    center: Vec3
    half_axes: Vec3
    angles: Vec3 = (0.0, 0.0, 0.0)
    lobes: tuple[Lobe, ...] = ()

    def __post_init__(self) -> None:
        for name in ("center", "half_axes", "angles"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be 3 finite numbers; got {getattr(self, name)}")
            object.__setattr__(self, name, values)
        if min(self.half_axes) <= 0:
            raise ValueError(f"half_axes must be positive; got {self.half_axes}")
        object.__setattr__(
            self, "lobes", tuple(tuple(float(v) for v in lobe) for lobe in self.lobes)
        )

    @property
    def rotation(self) -> np.ndarray:
        """The ``(3, 3)`` rotation matrix ``R`` (columns: local axes in scanner coordinates)."""
        return rotation_matrix(*self.angles)

    def point(self, local: Sequence[float]) -> np.ndarray:
        """Scanner coordinates ``(3,)`` of a point given in units of the half axes."""
        q = np.asarray(local, dtype=float) * np.asarray(self.half_axes)
        return np.asarray(self.center) + self.rotation @ q

    def extent(self) -> np.ndarray:
        """Half-size ``(3,)`` of the axis-aligned bounding box, mm."""
        r = self.rotation * np.asarray(self.half_axes)[None, :]
        bulge = 1.0 + sum(abs(lobe[5]) for lobe in self.lobes)
        return np.sqrt((r**2).sum(axis=1)) * bulge


@dataclass(frozen=True, eq=False)
class Tube:
    """A tube swept along a polyline, e.g. a bowel loop or a vessel.

    Attributes:
        points: ``(N, 3)`` centreline vertices ``(x, y, z)``, mm.
        radius: ``(N,)`` outer radius at each vertex, mm.
        wall: ``(N,)`` wall thickness, mm (0 for a vessel).
        gas: ``(N,)`` gas level in ``[-1, 1]``: lumen voxels more than ``gas * r_lumen`` anterior
            of the centreline are gas (1: none, -1: all gas; the patient lies supine).
    """

    points: np.ndarray
    radius: np.ndarray
    wall: np.ndarray
    gas: np.ndarray

    def __post_init__(self) -> None:
        points = np.array(self.points, dtype=float)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) < 2:
            raise ValueError(f"points must be (N >= 2, 3); got {points.shape}")
        object.__setattr__(self, "points", points)
        for name in ("radius", "wall", "gas"):
            values = np.broadcast_to(np.asarray(getattr(self, name), dtype=float), len(points))
            values = values.copy()
            values.flags.writeable = False
            object.__setattr__(self, name, values)
        points.flags.writeable = False

    @classmethod
    def vessel(cls, points: np.ndarray, radius: float | np.ndarray) -> Tube:
        """A solid tube (no wall, no gas)."""
        n = len(points)
        return cls(points, np.broadcast_to(radius, n), np.zeros(n), np.ones(n))


def rotation_matrix(az: float, ay: float, ax: float) -> np.ndarray:
    """``Rz(az) @ Ry(ay) @ Rx(ax)``, angles in degrees."""
    a, b, c = np.deg2rad([az, ay, ax])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def local_coords(
    e: Ellipsoid, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Local coordinates of points in units of the half axes (``|.| <= 1`` inside)."""
    r = e.rotation.tolist()  # Python floats keep float32 coordinates float32
    dx, dy, dz = x - e.center[0], y - e.center[1], z - e.center[2]
    return tuple(
        (r[0][k] * dx + r[1][k] * dy + r[2][k] * dz) * (1.0 / e.half_axes[k]) for k in range(3)
    )


def ellipsoid_s(e: Ellipsoid, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Lobulated normalised radius: ``<= 1`` inside, ``1`` on the surface."""
    u, v, w = local_coords(e, x, y, z)
    s = np.sqrt(u * u + v * v + w * w)
    if not e.lobes:
        return s
    bulge = 1.0
    for nx, ny, nz, freq, phase, amp in e.lobes:
        bulge = bulge + amp * np.cos(freq * (u * nx + v * ny + w * nz) + phase)
    return s / bulge


def random_direction(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random unit vector ``(3,)``."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def draw_lobes(rng: np.random.Generator, count: int, amplitude: float) -> tuple[Lobe, ...]:
    """Random surface lobulation terms of an ellipsoid (amplitudes up to ``amplitude``)."""
    lobes = []
    for _ in range(count):
        n = rng.normal(size=3)
        n /= np.linalg.norm(n)
        lobes.append(
            (
                float(n[0]),
                float(n[1]),
                float(n[2]),
                float(rng.uniform(2.0, 4.0)),
                float(rng.uniform(0, 2 * np.pi)),
                float(rng.uniform(0.5, 1.0) * amplitude),
            )
        )
    return tuple(lobes)
