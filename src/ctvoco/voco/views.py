"""VoCo views of one cached volume: base crops, random crops and their overlap targets.

docs/algorithms.md §2.1. From a cached ``(D, H, W)`` uint8 volume:

1. **Canvas**: crop the exact foreground box (intensity above a threshold) and resize it
   to depth ``Z`` and in-plane size ``n*r``. Only the ``S`` canvas slices that are used
   (``floor(linspace(0, Z-1, S))``) are computed: each is a linear blend of the two nearest
   source slices, resized in-plane in one vectorised call.
2. **Base crops**: the ``n x n`` grid cells of the canvas, cell ``j = n*row + col``.
3. **Random crops**: ``K`` ``r x r`` crops with integer centres drawn uniformly from the
   half-open ``[r/2, n*r - r/2)`` (every such crop lies inside the canvas; see
   :mod:`ctvoco.voco.targets`).
4. **Targets**: ``y[k, j] = area(random_k ∩ base_j) / r²`` (rows sum to 1).

Optional augmentation:

- **Geometric** (``flip_prob``, ``rot90_prob``): in-plane flips and quarter turns of the
  whole canvas, drawn once per volume and applied *before* steps 2-4. Flipping or rotating
  a single crop would break its target, because the target describes where the crop's
  pixels lie; here the base grid, the random crops and their targets are all taken from
  the transformed canvas, so every target is still the exact overlap of a crop with a
  base cell in the frame the network sees. The canvas is square, so a quarter turn keeps
  its shape and grid.
- **Intensity** of random crops (contrast, brightness, noise).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from ctvoco.errors import UserError
from ctvoco.opencv import cv2
from ctvoco.voco.targets import overlap_targets, sample_random_centers

MODEL_GEOMETRY = ("grid", "crop_size", "num_random")
"""What the views and the model (:class:`~ctvoco.voco.VoCoPretrainer`) must agree on."""


@dataclass(frozen=True)
class VoCoViews:
    """Makes the VoCo training sample of one volume (a :class:`~ctvoco.data.VolumeView`).

    Attributes:
        grid: ``n``, the base grid is ``n x n``.
        crop_size: ``r``, side of every crop (canvas is ``n*r`` square).
        num_random: ``K`` random crops per volume.
        num_slices: ``S`` slices taken from every crop.
        depth: ``Z``, canvas depth the slices are spread over.
        foreground_threshold: Intensities above this are foreground for the canvas crop.
        contrast_jitter: Random crops get contrast ``U(1-j, 1+j)`` (0 disables).
        brightness_jitter: ... and brightness ``U(-j, j) * 255`` (0 disables).
        noise_std: ... and Gaussian noise of this std in intensity units (0 disables).
        channel: Channel of a multi-window cache used for pretraining.
        flip_prob: Probability of flipping the canvas, per in-plane axis (0 disables).
        rot90_prob: Probability of turning the canvas by a random 90, 180 or 270 degrees
            (0 disables).

    Returns (``__call__``):
        ``random`` ``(K, S, 1, r, r)`` uint8, ``base`` ``(n², S, 1, r, r)`` uint8,
        ``targets`` ``(K, n²)`` float32, ``centers`` ``(K, 2)`` int64 (row, col).
    """

    grid: int = 3
    crop_size: int = 64
    num_random: int = 2
    num_slices: int = 32
    depth: int = 64
    foreground_threshold: int = 0
    contrast_jitter: float = 0.0
    brightness_jitter: float = 0.0
    noise_std: float = 0.0
    channel: int = 0
    flip_prob: float = 0.0
    rot90_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("grid", "crop_size", "num_random", "num_slices", "depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VoCoViews.{name} must be positive; got {getattr(self, name)}")
        if self.grid < 2:
            raise ValueError(
                "VoCoViews.grid must be at least 2: random-crop centres are drawn from "
                f"[r/2, n*r - r/2), which is empty for n=1; got grid={self.grid}"
            )
        if self.num_slices > self.depth:
            raise ValueError(f"num_slices ({self.num_slices}) cannot exceed depth ({self.depth})")
        for name in ("flip_prob", "rot90_prob"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"VoCoViews.{name} must be in [0, 1]; got {getattr(self, name)}")

    def for_eval(self) -> VoCoViews:
        """These views as validation uses them: no intensity jitter, noise, flips or turns.

        The grid, crop size, random-crop count, slices and canvas depth are kept.
        """
        augmentation = ("_jitter", "_std", "_prob")
        return replace(self, **{f.name: 0.0 for f in fields(self) if f.name.endswith(augmentation)})

    @property
    def geometric(self) -> bool:
        """True when flips or quarter turns of the canvas are on."""
        return self.flip_prob > 0 or self.rot90_prob > 0

    def draw_geometry(self, rng: np.random.Generator) -> tuple[tuple[bool, bool], int]:
        """``((flip rows, flip columns), quarter turns)`` for one volume."""
        flips = rng.random(2) < self.flip_prob
        turns = int(rng.integers(1, 4)) if rng.random() < self.rot90_prob else 0
        return (bool(flips[0]), bool(flips[1])), turns

    def check_model(self, model: Any) -> None:
        """Refuse a model whose grid, crop size or random-crop count differs from these views.

        The views are the source of these values (``model=voco`` interpolates the module's
        from ``model.views``); a model built with others would get samples of another
        shape. Called by the data modules before any data work.

        Raises:
            UserError: Naming both values of every key that differs.
        """
        hparams = getattr(model, "hparams", {}) or {}
        differing = [
            f"model.module.{key}={hparams[key]} but model.views.{key}={getattr(self, key)}"
            for key in MODEL_GEOMETRY
            if key in hparams and hparams[key] != getattr(self, key)
        ]
        if differing:
            raise UserError(
                f"the model and its views disagree: {'; '.join(differing)}; set them in "
                "model.views only (the module takes them from there)"
            )

    @property
    def canvas_size(self) -> int:
        """In-plane canvas side ``n*r``."""
        return self.grid * self.crop_size

    def canvas(self, volume: np.ndarray) -> np.ndarray:
        """The ``S`` used canvas slices, ``(S, n*r, n*r)`` uint8.

        Args:
            volume: ``(D, H, W)`` or ``(C, D, H, W)`` uint8 cache array (may be memory-mapped).
        """
        vol = volume[self.channel] if volume.ndim == 4 else volume
        if vol.ndim != 3:
            raise ValueError(f"expected a (D, H, W) volume; got shape {volume.shape}")
        z0, z1, y0, y1, x0, x1 = foreground_box(vol, self.foreground_threshold)
        canvas_z = np.floor(np.linspace(0, self.depth - 1, self.num_slices)).astype(np.int64)
        # Centre of canvas slice c in source coordinates (align-corners=False convention).
        src = np.clip(z0 + (canvas_z + 0.5) * (z1 - z0) / self.depth - 0.5, z0, z1 - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, z1 - 1)
        weight = (src - lo).astype(np.float32)
        needed, position = np.unique(np.concatenate([lo, hi]), return_inverse=True)
        block = np.ascontiguousarray(vol[needed, y0:y1, x0:x1])  # (n, h, w) uint8
        planes = resize_planes(block, self.canvas_size).astype(np.float32)  # resize, then blend
        low = planes[position[: len(lo)]]
        high = planes[position[len(lo) :]]
        slices = low + (high - low) * weight[:, None, None]
        return np.clip(np.rint(slices), 0, 255).astype(np.uint8)

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        n, r, k = self.grid, self.crop_size, self.num_random
        planes = self.canvas(volume)
        if self.geometric:  # before cropping: the targets below hold in the new frame
            planes = transform_canvas(planes, *self.draw_geometry(rng))
        canvas = torch.from_numpy(planes)  # (S, n*r, n*r)
        s = canvas.shape[0]
        base = canvas.reshape(s, n, r, n, r).permute(1, 3, 0, 2, 4).reshape(n * n, s, 1, r, r)
        centers = sample_random_centers(rng, k, n, r)
        starts = centers - r // 2
        random = torch.stack([canvas[:, y : y + r, x : x + r] for y, x in starts]).unsqueeze(2)
        if self.contrast_jitter or self.brightness_jitter or self.noise_std:
            random = self._augment(random, rng)
        return {
            "random": random.contiguous(),
            "base": base.contiguous(),
            "targets": overlap_targets(centers, n, r),
            "centers": torch.from_numpy(centers.astype(np.int64)),
        }

    def _augment(self, crops: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Intensity-only jitter of ``(K, S, 1, r, r)`` uint8 crops, one draw per crop."""
        k = crops.shape[0]
        x = crops.float()
        contrast = torch.from_numpy(
            rng.uniform(1 - self.contrast_jitter, 1 + self.contrast_jitter, k)
        )
        bright = torch.from_numpy(
            rng.uniform(-self.brightness_jitter, self.brightness_jitter, k) * 255
        )
        shape = (k, 1, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
        x = (x - mean) * contrast.float().view(shape) + mean + bright.float().view(shape)
        if self.noise_std:
            noise = rng.normal(0.0, self.noise_std, size=tuple(x.shape)).astype(np.float32)
            x = x + torch.from_numpy(noise)
        return x.round_().clamp_(0, 255).to(torch.uint8)


def transform_canvas(canvas: np.ndarray, flips: tuple[bool, bool], turns: int) -> np.ndarray:
    """Flip and turn ``(S, H, W)`` canvas slices in-plane; flips first, then the turns.

    Args:
        canvas: ``(S, H, W)`` slices.
        flips: Reverse the rows (``H``), the columns (``W``).
        turns: Quarter turns counter-clockwise (``numpy.rot90`` on ``(H, W)``): pixel
            ``(y, x)`` goes to ``(W - 1 - x, y)`` per turn.

    Returns:
        A C-contiguous array (``(S, W, H)`` after an odd number of turns).
    """
    out = canvas
    if flips[0]:
        out = out[:, ::-1, :]
    if flips[1]:
        out = out[:, :, ::-1]
    if turns % 4:
        out = np.rot90(out, k=turns % 4, axes=(1, 2))
    return np.ascontiguousarray(out)


def resize_planes(planes: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(n, h, w)`` planes to ``(n, size, size)`` with OpenCV (same dtype).

    Area averaging when shrinking, bilinear when enlarging.
    """
    n, h, w = planes.shape
    interpolation = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    out = np.empty((n, size, size), dtype=planes.dtype)
    for i in range(n):
        out[i] = cv2.resize(planes[i], (size, size), interpolation=interpolation)
    return out


def foreground_box(volume: np.ndarray, threshold: int = 0) -> tuple[int, int, int, int, int, int]:
    """``(z0, z1, y0, y1, x0, x1)``, the tight box of the voxels above ``threshold``.

    Exact at full resolution and cheap: a voxel exceeds the threshold iff the maximum of
    its slice does, so the depth range comes from the per-slice maxima and the in-plane
    ranges from the maximum projection of the slices in that range (two streaming ``max``
    reductions over uint8, no boolean volume). Half-open bounds; the whole volume when
    nothing is above the threshold.

    Args:
        volume: ``(D, H, W)`` array (may be memory-mapped).
        threshold: Voxels strictly above this are foreground.

    Returns:
        ``z0 < z1``, ``y0 < y1``, ``x0 < x1`` such that ``volume[z0:z1, y0:y1, x0:x1]`` holds
        every voxel above ``threshold`` and each face of the box touches one.
    """
    d, h, w = volume.shape
    slice_max = np.asarray(volume).reshape(d, -1).max(axis=1)  # (D,)
    zs = np.flatnonzero(slice_max > threshold)
    if zs.size == 0:
        return 0, d, 0, h, 0, w
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    plane = np.asarray(volume[z0:z1]).max(axis=0) > threshold  # (H, W) maximum projection
    ys = np.flatnonzero(plane.any(axis=1))
    xs = np.flatnonzero(plane.any(axis=0))
    return z0, z1, int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
