"""Organ masks predicted for every cached series, resumable like preprocessing.

Predicted masks go to ``<cache>/predicted_masks/<key>.npy`` (uint8, the cache array's
``(D, H, W)``, RSNA's labels), each written to a temporary name and renamed, so a killed
run leaves no partial file and a re-run predicts only the series still missing. The model
that made them is recorded in ``predicted_masks/model.json``: a run with another model
stops instead of mixing masks of two models, unless told to start over.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ctvoco.cache.volume_cache import VolumeCache, save_array
from ctvoco.errors import UserError
from ctvoco.io.atomic import write_text_atomic
from ctvoco.preprocessing.stacks import slice_stack

PREDICTED = "predicted_masks"
MODEL_RECORD = "model.json"


def predict_series(
    net: nn.Module, volume: np.ndarray, *, context: int, batch_size: int = 16
) -> np.ndarray:
    """Organ labels of every slice of one cached series.

    Args:
        net: ``(N, C, H, W)`` -> ``(N, classes, H, W)`` logits, in eval mode.
        volume: ``(D, H, W)`` or ``(C, D, H, W)`` uint8 cache array.
        context: The neighbour slices the net was trained with.
        batch_size: Slices per forward pass.

    Returns:
        ``(D, H, W)`` uint8 labels.
    """
    depth = volume.shape[-3]
    device = next(net.parameters()).device
    out = np.empty((depth, *volume.shape[-2:]), dtype=np.uint8)
    with torch.inference_mode():
        for start in range(0, depth, batch_size):
            stop = min(depth, start + batch_size)
            batch = np.stack([slice_stack(volume, d, context) for d in range(start, stop)])
            logits = net(torch.from_numpy(batch).to(device))
            out[start:stop] = logits.argmax(1).to(torch.uint8).cpu().numpy()
    return out


def predicted_mask_path(cache: VolumeCache, key: str) -> Path:
    """Where the predicted mask of ``key`` lives."""
    return cache.root / PREDICTED / f"{key}.npy"


def predict_cache(
    net: nn.Module,
    cache_dir: str | os.PathLike[str],
    model: dict[str, Any],
    *,
    context: int,
    keys: Sequence[str] | None = None,
    batch_size: int = 16,
    restart: bool = False,
    advance: Callable[[str], None] | None = None,
) -> list[str]:
    """Predict and store the mask of every cached series that has none yet.

    Args:
        net: The segmentation network, in eval mode.
        cache_dir: The volume cache.
        model: What identifies the model (its checkpoint and digest), kept in
            ``model.json``.
        context: Its neighbour slices.
        keys: The series (default: every series ready in the cache).
        batch_size: Slices per forward pass.
        restart: Delete the masks of another model instead of stopping.
        advance: Called with each series' key once it is done (progress).

    Returns:
        The keys predicted by this call (the others were done already).

    Raises:
        UserError: The folder holds masks of another model and ``restart`` is false.
    """
    cache = VolumeCache(cache_dir)
    folder = cache.root / PREDICTED
    record = folder / MODEL_RECORD
    existing = json.loads(record.read_text()) if record.exists() else model
    if existing != model:
        if not restart:
            raise UserError(
                f"{folder} holds masks predicted by another model "
                f"({existing.get('checkpoint')}); pass restart=true to "
                "delete them and predict again, or use another cache"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps(model, indent=2, sort_keys=True))
    done = []
    for key in cache.ready_keys() if keys is None else keys:
        path = predicted_mask_path(cache, key)
        if not path.exists():
            save_array(
                path, predict_series(net, cache.load(key), context=context, batch_size=batch_size)
            )
            done.append(key)
        if advance is not None:
            advance(key)
    return done
