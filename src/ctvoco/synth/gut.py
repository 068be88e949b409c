"""Paths of the colon and the small bowel loops of a synthetic patient."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ctvoco.synth.shapes import Ellipsoid, Tube, ellipsoid_s, random_direction


def _smooth_path(points: np.ndarray, step: float, sigma_mm: float) -> np.ndarray:
    """Resample a polyline every ``step`` mm and smooth it with a Gaussian along its length."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    fine = np.arange(0.0, s[-1] + 1e-9, step / 2.0)
    dense = np.stack([np.interp(fine, s, points[:, k]) for k in range(3)], axis=1)
    dense = ndimage.gaussian_filter1d(dense, sigma_mm / (step / 2.0), axis=0, mode="nearest")
    return dense[::2]


def draw_colon(
    rng: np.random.Generator,
    cx: float,
    yc: float,
    cav_a: float,
    cav_ant: float,
    cav_post: float,
    liver: Ellipsoid,
    spleen: Ellipsoid,
    s1_top: float,
    vb_y: float,
) -> Tube:
    """Caecum, ascending, transverse, descending, sigmoid colon and rectum."""
    liver_bottom = liver.center[2] + 0.8 * liver.half_axes[2]
    spleen_bottom = spleen.center[2] + 0.9 * spleen.half_axes[2]
    a, ba, bp = cav_a, cav_ant, cav_post
    control = np.array(
        [
            [cx - 0.6 * a, yc - 0.2 * ba, s1_top - 5.0],
            [cx - 0.72 * a, yc - 0.1 * ba, s1_top - 55.0],
            [cx - 0.72 * a, yc - 0.15 * ba, liver_bottom + 15.0],
            [cx - 0.55 * a, yc - 0.45 * ba, liver_bottom + 5.0],
            [cx - 0.25 * a, yc - 0.72 * ba, liver_bottom + 22.0],
            [cx + 0.1 * a, yc - 0.72 * ba, liver_bottom + 32.0],
            [cx + 0.45 * a, yc - 0.55 * ba, spleen_bottom + 10.0],
            [cx + 0.7 * a, yc - 0.2 * ba, spleen_bottom - 5.0],
            [cx + 0.74 * a, yc - 0.05 * ba, spleen_bottom + 50.0],
            [cx + 0.72 * a, yc - 0.1 * ba, s1_top - 40.0],
            [cx + 0.45 * a, yc - 0.35 * ba, s1_top + 10.0],
            [cx + 0.12 * a, yc - 0.4 * ba, s1_top + 40.0],
            [cx - 0.05 * a, yc + 0.1 * bp, s1_top + 70.0],
            [cx, vb_y + 5.0, s1_top + 120.0],
        ]
    )
    control[1:-1] += rng.uniform(-10.0, 10.0, size=(len(control) - 2, 3))
    points = _smooth_path(control, 8.0, 10.0)
    n = len(points)
    radius = np.clip(rng.uniform(17.0, 22.0) + _smooth_noise(rng, n, 3.0, 4.0), 13.0, 26.0)
    gas = np.clip(rng.uniform(-0.5, 0.2) + _smooth_noise(rng, n, 0.5, 4.0), -1.0, 1.0)
    return Tube(points, radius, np.full(n, 3.0), gas)


def _smooth_noise(rng: np.random.Generator, n: int, amplitude: float, sigma: float) -> np.ndarray:
    """Smooth 1D noise of roughly the given amplitude, ``(n,)``."""
    noise = ndimage.gaussian_filter1d(rng.normal(size=n), sigma, mode="wrap")
    return amplitude * noise / max(float(noise.std()), 1e-6)


def draw_small_bowel(
    rng: np.random.Generator,
    cx: float,
    yc: float,
    cav_a: float,
    cav_ant: float,
    l1_top: float,
    s1_top: float,
    vb_y: float,
    obstacles: Sequence[Ellipsoid],
    colon: Tube,
) -> tuple[Tube, ...]:
    """Small bowel loops as persistent random walks in the mid and lower abdomen."""
    center = np.array([cx, yc - 0.3 * cav_ant, 0.5 * (l1_top + 60.0 + s1_top + 30.0)])
    half = np.array([0.55 * cav_a, 0.5 * cav_ant, 0.5 * (s1_top + 30.0 - l1_top - 60.0)])

    def free(p: np.ndarray, radius: float) -> bool:
        if np.sum(((p - center) / half) ** 2) > 1.0:
            return False
        if abs(p[0] - cx) < 35.0 and p[1] > vb_y - 40.0:
            return False  # spine, aorta and IVC
        for e in obstacles:
            if ellipsoid_s(e, *p) < 1.1:
                return False
        d = np.linalg.norm(colon.points - p, axis=1)
        return bool(d.min() > colon.radius[np.argmin(d)] + radius)

    loops = []
    step = 7.0
    for _ in range(int(rng.integers(4, 7))):
        radius = rng.uniform(10.0, 13.5)
        p = center + rng.uniform(-0.6, 0.6, 3) * half
        for _ in range(50):
            if free(p, radius):
                break
            p = center + rng.uniform(-0.7, 0.7, 3) * half
        direction = random_direction(rng)
        path = [p]
        for _ in range(int(rng.integers(35, 56))):
            for attempt in range(10):
                trial = direction + rng.normal(0.0, 0.35 + 0.1 * attempt, 3)
                if attempt >= 3:
                    trial += (center - p) / max(np.linalg.norm(center - p), 1.0)
                trial /= np.linalg.norm(trial)
                if free(p + step * trial, radius):
                    break
            direction = trial
            p = p + step * direction
            path.append(p)
        points = _smooth_path(np.array(path), step, 5.0)
        n = len(points)
        gas = np.clip(rng.uniform(0.3, 1.1) + _smooth_noise(rng, n, 0.4, 5.0), -1.0, 1.0)
        loops.append(Tube(points, np.full(n, radius), np.full(n, 2.5), gas))
    return tuple(loops)
