"""Classifier input from one cached volume: a stack of slices, cropped, optionally augmented.

docs/algorithms.md §3.1 and §3.4: ``S_f`` slices at ``floor(linspace(0, D-1, S_f))``, a
``crop x crop`` window (random in training, centred at evaluation); training augmentation
(random flips, 90° rotations, a small in-plane rotation, histogram shift, contrast, coarse
dropout) comes from MONAI's array transforms, seeded per sample, the same transform for
every slice of the stack.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class SliceStackViews:
    """Makes ``{"image": (S, C, crop, crop) uint8}`` from a cached volume.

    The defaults are the training views of ``model=classifier`` (random crop and the
    augmentation of docs/algorithms.md §3.4); :meth:`for_eval` gives these views as evaluation
    uses them (centre crop, no augmentation), :meth:`plain` such views from scratch.

    Attributes:
        num_slices: ``S_f`` slices taken evenly over the depth.
        crop: In-plane crop side (random position in training, centre otherwise).
        random_crop: Random crop position (training) instead of the centre.
        flip_prob: Probability of a flip, per in-plane axis.
        rot90_prob: Probability of a random multiple of 90° rotation.
        rotate_prob: Probability of a small rotation of at most ``rotate_degrees``.
        rotate_degrees: Maximum small rotation angle.
        histogram_shift_prob: Probability of a random histogram shift.
        contrast_prob: Probability of a random gamma contrast change.
        dropout_prob: Probability of coarse dropout (a few zeroed rectangles).
    """

    num_slices: int = 48
    crop: int = 192
    random_crop: bool = True
    flip_prob: float = 0.5
    rot90_prob: float = 0.25
    rotate_prob: float = 0.3
    rotate_degrees: float = 15.0
    histogram_shift_prob: float = 0.2
    contrast_prob: float = 0.2
    dropout_prob: float = 0.2

    @classmethod
    def plain(cls, **values: Any) -> SliceStackViews:
        """Views without augmentation: centre crop, every probability 0, unless ``values``
        set some (e.g. ``SliceStackViews.plain(num_slices=16, random_crop=True)``)."""
        return replace(cls().for_eval(), **values)

    def for_eval(self) -> SliceStackViews:
        """These views as evaluation sees them: the centre crop and no augmentation.

        The slices, the crop size and every other setting that is not augmentation are kept.
        """
        off: dict[str, Any] = {f.name: 0.0 for f in fields(self) if f.name.endswith("_prob")}
        return replace(self, random_crop=False, **off)

    @property
    def augments(self) -> bool:
        """True when any random intensity or geometry change is on."""
        probs = (
            self.flip_prob,
            self.rot90_prob,
            self.rotate_prob,
            self.histogram_shift_prob,
            self.contrast_prob,
            self.dropout_prob,
        )
        return any(p > 0 for p in probs)

    def slice_indices(self, depth: int) -> np.ndarray:
        """``floor(linspace(0, depth-1, S_f))``."""
        return np.floor(np.linspace(0, depth - 1, self.num_slices)).astype(np.int64)

    def crop_origin(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of the crop (clamped when the volume is smaller than the crop)."""
        dy, dx = max(0, height - self.crop), max(0, width - self.crop)
        if self.random_crop:
            return int(rng.integers(0, dy + 1)), int(rng.integers(0, dx + 1))
        return dy // 2, dx // 2

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        vol = volume if volume.ndim == 4 else volume[None]  # (C, D, H, W)
        _, depth, height, width = vol.shape
        y, x = self.crop_origin(height, width, rng)
        index = self.slice_indices(depth)
        stack = np.ascontiguousarray(vol[:, index, y : y + self.crop, x : x + self.crop])
        stack = _pad_to(stack, self.crop)
        image = torch.from_numpy(stack).permute(1, 0, 2, 3)  # (S, C, h, w)
        if self.augments:
            image = self._augment(image, rng)
        return {"image": image.contiguous()}

    def _augment(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The same random transform on every slice: ``(S, C, h, w)`` uint8 in and out."""
        s, c, h, w = image.shape
        transform = _transform(self)
        transform.set_random_state(seed=int(rng.integers(0, 2**31 - 1)))
        stacked = image.reshape(s * c, h, w).float()
        out = transform(stacked)
        out = torch.as_tensor(out).round_().clamp_(0, 255).to(torch.uint8)
        return out.reshape(s, c, *out.shape[-2:])


def _pad_to(stack: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``(C, S, h, w)`` in-plane to at least ``size x size`` (centred)."""
    _, _, h, w = stack.shape
    if h >= size and w >= size:
        return stack
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    return np.pad(
        stack, ((0, 0), (0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    )


_TRANSFORMS: dict[SliceStackViews, Any] = {}


def _transform(views: SliceStackViews) -> Any:
    """The MONAI chain for ``views`` (built once per process; channel-first ``(S*C, h, w)``)."""
    if views in _TRANSFORMS:
        return _TRANSFORMS[views]
    from monai.data import set_track_meta
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandCoarseDropout,
        RandFlip,
        RandHistogramShift,
        RandRotate,
        RandRotate90,
        ScaleIntensityRange,
    )

    set_track_meta(False)
    steps: list[Any] = []
    if views.flip_prob > 0:
        steps += [
            RandFlip(prob=views.flip_prob, spatial_axis=0),
            RandFlip(prob=views.flip_prob, spatial_axis=1),
        ]
    if views.rot90_prob > 0:
        steps.append(RandRotate90(prob=views.rot90_prob, max_k=3, spatial_axes=(0, 1)))
    if views.rotate_prob > 0:
        angle = float(np.deg2rad(views.rotate_degrees))
        steps.append(
            RandRotate(range_x=angle, prob=views.rotate_prob, padding_mode="zeros", keep_size=True)
        )
    if views.histogram_shift_prob > 0 or views.contrast_prob > 0:
        # Intensity changes work on [0, 1]; map back to [0, 255] afterwards.
        steps.append(ScaleIntensityRange(0.0, 255.0, 0.0, 1.0))
        if views.histogram_shift_prob > 0:
            steps.append(
                RandHistogramShift(num_control_points=(5, 10), prob=views.histogram_shift_prob)
            )
        if views.contrast_prob > 0:
            steps.append(RandAdjustContrast(prob=views.contrast_prob, gamma=(0.7, 1.5)))
        steps.append(ScaleIntensityRange(0.0, 1.0, 0.0, 255.0))
    if views.dropout_prob > 0:
        hole = max(4, views.crop // 12)
        steps.append(
            RandCoarseDropout(
                holes=4,
                spatial_size=(hole, hole),
                max_spatial_size=(3 * hole, 3 * hole),
                fill_value=0,
                prob=views.dropout_prob,
            )
        )
    _TRANSFORMS[views] = Compose(steps)
    return _TRANSFORMS[views]
