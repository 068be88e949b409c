"""From HU volumes to cache arrays: windowing, body crop, area resize or target spacing."""

from ctvoco.preprocessing.body_crop import CropBox, body_box, largest_component
from ctvoco.preprocessing.pipeline import (
    DEFAULT_WINDOW,
    FLARE_WINDOW,
    RSNA_WINDOW,
    PreprocessConfig,
    PreprocessResult,
    load_volume,
    preprocess_series,
    preprocess_volume,
)
from ctvoco.preprocessing.resize import area_resize
from ctvoco.preprocessing.spacing import fit_to_shape, resample_to_spacing
from ctvoco.preprocessing.window import apply_window, apply_window_per_slice_minmax, window_lut

__all__ = [
    "DEFAULT_WINDOW",
    "FLARE_WINDOW",
    "RSNA_WINDOW",
    "CropBox",
    "PreprocessConfig",
    "PreprocessResult",
    "apply_window",
    "apply_window_per_slice_minmax",
    "area_resize",
    "body_box",
    "fit_to_shape",
    "largest_component",
    "load_volume",
    "preprocess_series",
    "preprocess_volume",
    "resample_to_spacing",
    "window_lut",
]
