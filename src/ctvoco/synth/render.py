"""Rendering a synthetic patient: volume assembly, partial-volume blur, noise, int16 HU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage

from ctvoco.synth.anatomy import Anatomy, draw_anatomy
from ctvoco.synth.canvas import Canvas, Grid
from ctvoco.synth.injuries import plan_injuries
from ctvoco.synth.labels import DEFAULT_PREVALENCE, InjuryLabels, draw_injury_labels
from ctvoco.synth.lesions import paint_lesions
from ctvoco.synth.painting import paint_anatomy
from ctvoco.synth.shapes import Vec3

DEFAULT_SHAPE: Final[tuple[int, int, int]] = (64, 160, 160)
"""Default ``(D, H, W)``: small enough for tests, 320 x 352 x 352 mm."""

DEFAULT_SPACING: Final[Vec3] = (5.0, 2.2, 2.2)
"""Default voxel spacing ``(dz, dy, dx)`` in millimetres."""

_BLUR_SIGMA_VOXELS: Final = (0.35, 0.5, 0.5)
"""Partial-volume blur ``(z, y, x)`` in voxels."""


@dataclass(frozen=True, eq=False)
class Phantom:
    """A rendered synthetic CT series.

    Attributes:
        hu: ``(D, H, W)`` int16 Hounsfield units, canonical orientation.
        organs: ``(D, H, W)`` uint8 organ codes (:data:`ORGAN_CODES`).
        injuries: ``(D, H, W)`` uint8 injury codes (:data:`INJURY_CODES`).
        labels: The patient's labels (consistent with ``injuries``).
        anatomy: The patient's anatomy.
        spacing: ``(dz, dy, dx)`` mm.
        z_offset_mm: Position of the top of the field of view in the patient frame, mm.
    """

    hu: np.ndarray
    organs: np.ndarray
    injuries: np.ndarray
    labels: InjuryLabels
    anatomy: Anatomy
    spacing: Vec3
    z_offset_mm: float = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``."""
        d, h, w = self.hu.shape
        return d, h, w


def render_volume(
    anatomy: Anatomy,
    labels: InjuryLabels,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    rng: np.random.Generator | None = None,
    z_offset_mm: float = 0.0,
    noise_hu: float = 12.0,
) -> Phantom:
    """Render a patient as a CT volume.

    Args:
        anatomy: The patient (:func:`draw_anatomy`).
        labels: Injuries to show.
        shape: ``(D, H, W)``.
        spacing: ``(dz, dy, dx)`` in mm; the field of view is ``shape * spacing`` mm, centred
            in-plane on the scanner isocentre and starting at ``z_offset_mm``.
        rng: Generator for the image noise; None seeds it from ``anatomy.seed`` (two renders
            of one patient then get the same noise).
        z_offset_mm: Craniocaudal position of the top of the field of view, mm (0: a few
            centimetres above the liver dome).
        noise_hu: Standard deviation of the Gaussian image noise, HU.

    Returns:
        The phantom: int16 HU and uint8 organ and injury maps, all ``(D, H, W)``.

    Raises:
        ValueError: On a bad shape, spacing or noise level.
    """
    shape3 = _check_shape(shape)
    spacing3 = _check_spacing(spacing)
    if not np.isfinite(noise_hu) or noise_hu < 0:
        raise ValueError(f"noise_hu must be a finite number >= 0; got {noise_hu}")
    if not isinstance(labels, InjuryLabels):
        raise TypeError(f"labels must be InjuryLabels; got {type(labels).__name__}")
    if rng is None:
        rng = np.random.default_rng([anatomy.seed, 3])

    canvas = Canvas.empty(Grid.make(shape3, spacing3, float(z_offset_mm)))
    plan = plan_injuries(anatomy, labels)
    paint_anatomy(canvas, anatomy, plan.bowel)
    paint_lesions(canvas, anatomy, plan)
    hu = _finish(canvas.hu, rng, noise_hu)
    return Phantom(
        hu, canvas.organs, canvas.injuries, labels, anatomy, spacing3, float(z_offset_mm)
    )


def _finish(hu: np.ndarray, rng: np.random.Generator, noise_hu: float) -> np.ndarray:
    """Partial-volume blur, Gaussian noise, rounding to int16."""
    out = ndimage.gaussian_filter(hu, _BLUR_SIGMA_VOXELS, truncate=2.0, output=np.float32)
    if noise_hu > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise_hu)
    np.clip(out, -1024.0, 3071.0, out=out)
    np.rint(out, out=out)
    return out.astype(np.int16)


def make_phantom(
    seed_or_rng: int | np.random.Generator,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    prevalence: Mapping[str, Sequence[float]] = DEFAULT_PREVALENCE,
    labels: InjuryLabels | None = None,
    z_offset_mm: float = 0.0,
    noise_hu: float = 12.0,
) -> Phantom:
    """Draw a patient (anatomy and labels) and render it.

    The labels are always drawn (so the random stream does not depend on ``labels``); given
    ``labels`` replace them. The same seed with different ``labels`` therefore renders the
    same anatomy with the same noise.

    Args:
        seed_or_rng: Seed or generator.
        shape: ``(D, H, W)``.
        spacing: ``(dz, dy, dx)`` mm.
        prevalence: Class probabilities per target (:data:`DEFAULT_PREVALENCE`).
        labels: Labels to use instead of drawn ones.
        z_offset_mm: See :func:`render_volume`.
        noise_hu: See :func:`render_volume`.

    Returns:
        The phantom.
    """
    rng = (
        seed_or_rng
        if isinstance(seed_or_rng, np.random.Generator)
        else (np.random.default_rng(seed_or_rng))
    )
    anatomy = draw_anatomy(rng)
    drawn = draw_injury_labels(rng, prevalence)
    return render_volume(
        anatomy, labels if labels is not None else drawn, shape, spacing, rng, z_offset_mm, noise_hu
    )


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate ``(D, H, W)``."""
    if len(shape) != 3 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be three positive ints (D, H, W); got {shape}")
    d, h, w = (int(s) for s in shape)
    return d, h, w


def _check_spacing(spacing: Sequence[float]) -> Vec3:
    """Validate ``(dz, dy, dx)`` in mm."""
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive mm values (dz, dy, dx); got {spacing}")
    dz, dy, dx = (float(s) for s in spacing)
    return dz, dy, dx
