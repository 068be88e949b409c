"""``preprocess_series``: one CT series in, one cache array out (docs/algorithms.md §1.2–1.3).

1. HU -> fixed window(s) -> uint8 (``scaling="fixed"``; ``"per_slice_minmax"`` reproduces
   the research code, which stretches every slice by its own min/max);
2. body crop: threshold the (first) windowed channel, largest connected component per
   slice, union of the boxes, a margin; leading/trailing empty slices dropped;
3. by default, area resize of the cropped block to ``shape`` (default ``(96, 256, 256)``);
   with ``target_spacing``, the block is resampled to that voxel size instead and
   centre-cropped or zero-padded to ``shape`` (see :mod:`ctvoco.preprocessing.spacing`);
4. uint8, C-contiguous: ``(D, H, W)`` for one window, ``(C, D, H, W)`` for several.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ctvoco.errors import ArgumentError, DataError, UserError, look_up_option
from ctvoco.io.dicom import read_dicom_series
from ctvoco.io.nifti import read_nifti
from ctvoco.io.volume import CTVolume
from ctvoco.preprocessing.body_crop import CropBox, body_box, clip_box, mask_stride
from ctvoco.preprocessing.resize import area_resize
from ctvoco.preprocessing.spacing import fit_to_shape, resample_to_spacing
from ctvoco.preprocessing.window import (
    apply_window,
    apply_window_per_slice_minmax,
    windowed_threshold_hu,
)

ALGORITHM_VERSION = 1
"""Bumped whenever the same config would produce different arrays; part of the fingerprint."""

SCALINGS = ("fixed", "per_slice_minmax")
RSNA_WINDOW = (-150.0, 250.0)
"""Level 50 / width 400."""
FLARE_WINDOW = (-175.0, 250.0)
"""VoCo's FLARE preset (not a default: every data set defaults to :data:`DEFAULT_WINDOW`)."""
DEFAULT_WINDOW = RSNA_WINDOW
"""The window of every data set by default (RSNA and FLARE alike), so that volumes of
different sources pretrained together map the same tissue to the same intensity."""

ADDED_OPTIONS: dict[str, Any] = {"target_spacing": None}
"""Options added after caches were first written, with the value a cache whose
``cache.json`` lacks them was built with (the behaviour before the option existed)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How a series becomes a cache array.

    Attributes:
        windows: HU ``(low, high)`` pairs; one gives ``(D, H, W)``, several ``(C, D, H, W)``.
        shape: Output ``(D, H, W)``.
        scaling: ``"fixed"`` (same window bounds on every slice) or ``"per_slice_minmax"``.
        body_crop: Crop to the body before resizing.
        body_threshold: Windowed intensity (0-255, first window) above which a voxel is body.
        margin: In-plane margin around the body box, source voxels.
        min_body_fraction: Slices whose body covers less of the slice are empty.
        target_spacing: ``None`` (default): the body block is stretched to ``shape``. Else
            the ``(z, y, x)`` voxel size in mm (a number: isotropic; ``[z, in_plane]``): the
            block is resampled to it and centre-cropped or zero-padded to ``shape``, so
            every array voxel covers the same millimetres whatever the series' spacing.
    """

    windows: tuple[tuple[float, float], ...] = (DEFAULT_WINDOW,)
    shape: tuple[int, int, int] = (96, 256, 256)
    scaling: str = "fixed"
    body_crop: bool = True
    body_threshold: float = 10.0
    margin: int = 4
    min_body_fraction: float = 0.01
    target_spacing: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        windows = as_windows(self.windows)
        if not windows or any(hi <= lo for lo, hi in windows):
            raise ArgumentError(
                "preprocess.windows",
                f" must be [low, high] HU pairs with high > low; got {self.windows}",
            )
        try:
            shape = tuple(int(s) for s in self.shape)
        except (TypeError, ValueError):
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise ArgumentError(
                "preprocess.shape", f" must be three positive sizes (D, H, W); got {self.shape}"
            )
        look_up_option("preprocess.scaling", self.scaling, SCALINGS)
        if not 0 <= self.body_threshold < 255:
            raise ArgumentError(
                "preprocess.body_threshold", f" must be in [0, 255); got {self.body_threshold}"
            )
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "target_spacing", as_spacing(self.target_spacing))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> PreprocessConfig:
        """Build from a ``preprocess`` argument, naming unknown keys in the error.

        Raises:
            UserError: A key is unknown, or a value is refused.
        """
        values = dict(mapping or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(
                f"unknown preprocess option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @property
    def channels(self) -> int:
        """Number of windows, i.e. output channels."""
        return len(self.windows)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of a cache array: ``(D, H, W)`` or ``(C, D, H, W)``."""
        return self.shape if self.channels == 1 else (self.channels, *self.shape)

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the arrays, as plain JSON-able values."""
        values = asdict(self)
        values["windows"] = [list(w) for w in self.windows]
        values["shape"] = list(self.shape)
        values["target_spacing"] = (
            None if self.target_spacing is None else list(self.target_spacing)
        )
        values["algorithm_version"] = ALGORITHM_VERSION
        return values

    def variant_name(self) -> str:
        """A readable name such as ``1w_contour_96x256x256`` (the research code's convention)."""
        crop = "contour" if self.body_crop else "full"
        scale = "" if self.scaling == "fixed" else "_minmax"
        spacing = (
            ""
            if self.target_spacing is None
            else "_" + "x".join(f"{s:g}" for s in self.target_spacing) + "mm"
        )
        return f"{self.channels}w_{crop}_{'x'.join(map(str, self.shape))}{spacing}{scale}"


@dataclass
class PreprocessResult:
    """A preprocessed series and what was done to it."""

    array: np.ndarray
    crop_box: CropBox
    volume: CTVolume
    warnings: list[str] = field(default_factory=list)


def load_volume(source: str | os.PathLike[str] | CTVolume | np.ndarray) -> CTVolume:
    """A :class:`CTVolume` from a DICOM folder, a NIfTI file, a volume or a HU array."""
    if isinstance(source, CTVolume):
        return source
    if isinstance(source, np.ndarray):
        return CTVolume(hu=source, spacing=(1.0, 1.0, 1.0), source="<array>")
    path = Path(source)
    if path.is_dir():
        return read_dicom_series(path)
    if path.name.endswith((".nii", ".nii.gz")):
        return read_nifti(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    raise DataError(f"{path}: expected a DICOM series folder or a .nii/.nii.gz file")


def preprocess_volume(volume: CTVolume, config: PreprocessConfig) -> PreprocessResult:
    """Window, body-crop and resize one volume; see the module docstring.

    Args:
        volume: HU volume, canonical orientation.
        config: Preprocessing parameters.

    Returns:
        The uint8 array (``config.output_shape``), the crop box (source voxels) and warnings.

    Raises:
        DataError: No body could be found in the volume.
    """
    hu = volume.hu
    low, high = config.windows[0]
    box = CropBox.full(hu.shape)
    if config.body_crop:
        stride = mask_stride(hu.shape[1], hu.shape[2])
        threshold_hu = windowed_threshold_hu(config.body_threshold, low, high)
        foreground = hu[:, ::stride, ::stride] > threshold_hu
        try:
            box = clip_box(
                body_box(
                    foreground,
                    stride=stride,
                    margin=config.margin,
                    min_area_fraction=config.min_body_fraction,
                ),
                hu.shape,
            )
        except ValueError as exc:
            raise DataError(f"{volume.source or 'volume'}: {exc}") from exc
    block = hu[box.slices]
    channels = [_window_block(block, lo, hi, config.scaling) for lo, hi in config.windows]
    resized = [_to_uint8(_to_shape(c, volume.spacing, config)) for c in channels]
    array = resized[0] if len(resized) == 1 else np.stack(resized)
    return PreprocessResult(np.ascontiguousarray(array), box, volume, list(volume.warnings))


def _window_block(block: np.ndarray, low: float, high: float, scaling: str) -> np.ndarray:
    if scaling == "per_slice_minmax":
        return apply_window_per_slice_minmax(block, low, high)
    return apply_window(block, low, high)


def _to_shape(
    block: np.ndarray, spacing: tuple[float, float, float], config: PreprocessConfig
) -> np.ndarray:
    """The windowed block at ``config.shape``: stretched, or resampled and cropped/padded."""
    if config.target_spacing is None:
        return area_resize(block, config.shape)
    resampled = resample_to_spacing(block, spacing, config.target_spacing)
    return fit_to_shape(resampled, config.shape)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round to the nearest integer intensity, as uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def preprocess_series(
    source: str | os.PathLike[str] | CTVolume | np.ndarray,
    config: PreprocessConfig | None = None,
    **overrides: Any,
) -> np.ndarray:
    """Preprocess one series into a cache array (uint8, default ``(96, 256, 256)``).

    Args:
        source: DICOM series folder, NIfTI file, :class:`CTVolume` or ``(D, H, W)`` HU array.
        config: Base parameters (defaults: RSNA window, body crop, ``(96, 256, 256)``).
        **overrides: Fields of :class:`PreprocessConfig` to change, e.g.
            ``windows=[(-175, 250)]``, ``scaling="per_slice_minmax"``.

    Returns:
        uint8 array, ``(D, H, W)`` or ``(C, D, H, W)`` with several windows.

    Example:
        >>> from ctvoco import preprocess_series  # doctest: +SKIP
        >>> arr = preprocess_series("train_images/10004/21057", shape=(64, 192, 192))  # doctest: +SKIP
    """
    base = config or PreprocessConfig()
    if overrides:
        base = replace(base, **overrides)
    return preprocess_volume(load_volume(source), base).array


def as_windows(value: Any) -> tuple[tuple[float, float], ...]:
    """Accept one ``[low, high]`` HU pair or a list of pairs."""
    try:
        if len(value) == 2 and all(isinstance(v, int | float) for v in value):
            return ((float(value[0]), float(value[1])),)
        return tuple((float(lo), float(hi)) for lo, hi in value)
    except (TypeError, ValueError):
        raise ArgumentError(
            "preprocess.windows", f" must be [low, high] HU pairs; got {value!r}"
        ) from None


def as_spacing(value: Any) -> tuple[float, float, float] | None:
    """``None``, or a ``(z, y, x)`` voxel size in mm from a number, ``[z, in_plane]`` or a triple.

    Raises:
        UserError: Anything else, or a size that is not a finite positive number.
    """
    if value is None:
        return None
    error = ArgumentError(
        "preprocess.target_spacing",
        " must be null, a voxel size in mm, [z, in_plane] or [z, y, x] with finite sizes > 0; "
        f"got {value!r}",
    )
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            sizes = [float(value)] * 3
        else:
            sizes = [float(v) for v in value]
            if len(sizes) == 2:
                sizes = [sizes[0], sizes[1], sizes[1]]
    except (TypeError, ValueError):
        raise error from None
    if len(sizes) != 3 or not all(math.isfinite(s) and s > 0 for s in sizes):
        raise error
    return (sizes[0], sizes[1], sizes[2])
