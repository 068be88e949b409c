"""2.5D network inputs: a slice of a cached array with its neighbours as channels."""

from __future__ import annotations

import numpy as np


def slice_stack(volume: np.ndarray, index: int, context: int) -> np.ndarray:
    """Slices ``index - context .. index + context`` of a cached array as channels.

    Args:
        volume: ``(D, H, W)`` or ``(C, D, H, W)`` uint8 cache array.
        index: The centre slice.
        context: Neighbours on each side (0: the slice alone).

    Returns:
        ``(C * (2 * context + 1), H, W)`` float32 in ``[0, 1]``, window-major: each window's
        slices in cranio-caudal order.
    """
    channels = volume if volume.ndim == 4 else volume[np.newaxis]
    depth = channels.shape[1]
    picks = np.clip(np.arange(index - context, index + context + 1), 0, depth - 1)
    stack = channels[:, picks].reshape(-1, *channels.shape[2:])
    return stack.astype(np.float32) / np.float32(255.0)
