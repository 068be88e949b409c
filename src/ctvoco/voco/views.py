"""VoCo views of one cached volume: base crops, random crops and their overlap targets.

ALGORITHMS.md §2.1. From a cached ``(D, H, W)`` uint8 volume:

1. **Canvas**: crop the foreground (intensity above a threshold) and resize it to depth
   ``Z`` and in-plane size ``n*r``. Only the ``S`` canvas slices that are used
   (``floor(linspace(0, Z-1, S))``) are computed: each is a linear blend of the two nearest
   source slices, resized in-plane in one vectorised call.
2. **Base crops**: the ``n x n`` grid cells of the canvas, cell ``j = n*row + col``.
3. **Random crops**: ``K`` ``r x r`` crops with uniformly drawn integer centres that keep
   the crop inside the canvas.
4. **Targets**: ``y[k, j] = area(random_k ∩ base_j) / r²`` (rows sum to 1).

Optional augmentation touches intensities of random crops only (contrast, brightness,
noise): flips or rotations would change the positions that VoCo learns to predict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ctvoco.voco.targets import overlap_targets, sample_random_centers


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

    def __post_init__(self) -> None:
        for name in ("grid", "crop_size", "num_random", "num_slices", "depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VoCoViews.{name} must be positive; got {getattr(self, name)}")
        if self.num_slices > self.depth:
            raise ValueError(f"num_slices ({self.num_slices}) cannot exceed depth ({self.depth})")

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
        src = z0 + (canvas_z + 0.5) * (z1 - z0) / self.depth - 0.5
        src = np.clip(src, z0, z1 - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, z1 - 1)
        weight = torch.from_numpy((src - lo).astype(np.float32))[:, None, None]
        needed = np.unique(np.concatenate([lo, hi]))
        block = torch.from_numpy(np.ascontiguousarray(vol[needed, y0:y1, x0:x1])).float()
        index = {int(z): i for i, z in enumerate(needed)}
        low = block[[index[int(z)] for z in lo]]
        high = block[[index[int(z)] for z in hi]]
        slices = low * (1 - weight) + high * weight
        size = self.canvas_size
        mode = "area" if slices.shape[-1] >= size and slices.shape[-2] >= size else "bilinear"
        kwargs = {} if mode == "area" else {"align_corners": False}
        resized = F.interpolate(slices[None], size=(size, size), mode=mode, **kwargs)[0]
        return resized.round_().clamp_(0, 255).to(torch.uint8).numpy()

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        n, r, k = self.grid, self.crop_size, self.num_random
        canvas = torch.from_numpy(self.canvas(volume))  # (S, n*r, n*r)
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


def foreground_box(volume: np.ndarray, threshold: int = 0, stride: int = 4) -> tuple[int, ...]:
    """``(z0, z1, y0, y1, x0, x1)`` around voxels above ``threshold`` (whole volume if none).

    Computed on a strided view (``stride`` in-plane) for speed, so the in-plane box is
    conservative by up to ``stride - 1`` voxels.
    """
    d, h, w = volume.shape
    coarse = np.asarray(volume[:, ::stride, ::stride]) > threshold
    if not coarse.any():
        return 0, d, 0, h, 0, w
    zs = np.flatnonzero(coarse.any(axis=(1, 2)))
    ys = np.flatnonzero(coarse.any(axis=(0, 2)))
    xs = np.flatnonzero(coarse.any(axis=(0, 1)))
    return (
        int(zs[0]),
        int(zs[-1]) + 1,
        int(ys[0]) * stride,
        min(h, (int(ys[-1]) + 1) * stride),
        int(xs[0]) * stride,
        min(w, (int(xs[-1]) + 1) * stride),
    )
