"""Classifier training-step overhead against the encoder floor, loader and inference speed.

- a full training step (encoder, BiLSTM, pooling, five heads, weighted losses, backward,
  AdamW step) against the floor: encoder forward + backward on the same ``B x S`` slices
  (target <= 1.10);
- the loader: ``SliceStackViews`` with training augmentation at the research configuration
  (48 slices, 192 crop) on memory-mapped ``(96, 256, 256)`` cache arrays, one process
  (= volumes/s per DataLoader worker; target >= 20);
- inference: seconds per series from a 200-slice 512x512 RLE DICOM series to probabilities
  (read + preprocess + model with test-time flips) for the research configuration.

Defaults are the research configuration (efficientnetv2_rw_s, B=4, S_f=48, 192 crop).
Run: ``python benchmarks/finetune_step.py [--batch 2 --slices 16]`` (smaller is quicker on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ctvoco.cache import VolumeCache
from ctvoco.classify import InjuryClassifier, SliceStackViews, injury_loss
from ctvoco.io import CTVolume, SeriesTags, new_uid, write_dicom_series
from ctvoco.preprocessing import PreprocessConfig, preprocess_series, preprocess_volume
from ctvoco.synth.phantom import make_phantom

RESEARCH_AUGMENT = {
    "random_crop": True,
    "flip_prob": 0.5,
    "rot90_prob": 0.25,
    "rotate_prob": 0.3,
    "histogram_shift_prob": 0.2,
    "contrast_prob": 0.2,
    "dropout_prob": 0.2,
}


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_cache(root: Path, count: int) -> tuple[VolumeCache, list[str]]:
    cache = VolumeCache(root)
    keys = []
    for i in range(count):
        phantom = make_phantom(i, shape=(96, 256, 256), spacing=(4.0, 1.5, 1.5))
        cache.write(
            f"1_{i}",
            preprocess_volume(CTVolume(phantom.hu, phantom.spacing), PreprocessConfig()).array,
        )
        keys.append(f"1_{i}")
    return cache, keys


def single_threaded() -> None:
    """Like a DataLoader worker: one torch thread, one OpenCV thread."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def loader_rate(cache: VolumeCache, keys: list[str], views: SliceStackViews, repeats: int) -> float:
    threads = torch.get_num_threads()
    single_threaded()
    rng = np.random.default_rng(0)
    for key in keys:
        views(cache.load(key), rng)
    start = time.perf_counter()
    for i in range(repeats):
        views(cache.load(keys[i % len(keys)]), rng)
    rate = repeats / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    return rate


def inference_seconds(
    root: Path, model: InjuryClassifier, views: SliceStackViews
) -> tuple[float, float]:
    """(total, preprocessing) seconds for one 200x512x512 series to probabilities."""
    phantom = make_phantom(99, shape=(200, 512, 512), spacing=(2.0, 0.75, 0.75))
    folder = root / "series"
    write_dicom_series(
        phantom.hu, folder, phantom.spacing, SeriesTags("99", new_uid("s99"), new_uid("t99"))
    )
    model.eval()
    start = time.perf_counter()
    array = preprocess_series(folder)
    prepared = time.perf_counter()
    image = views(array, np.random.default_rng(0))["image"][None]
    with torch.inference_mode():
        model.predict_proba(image, tta=True)
    return time.perf_counter() - start, prepared - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnetv2_rw_s")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--slices", type=int, default=48, help="S_f")
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = InjuryClassifier(backbone=args.backbone, tta=True).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True
    )
    images = torch.randint(
        0, 256, (args.batch, args.slices, 1, args.crop, args.crop), dtype=torch.uint8
    )
    labels = torch.tensor([[0, 1, 2, 1, 0]] * args.batch)
    encoder = model.net.encoder

    def full_step() -> None:
        loss, _ = injury_loss(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    flat = images.flatten(0, 1).float().div(255)

    def floor_step() -> None:
        encoder(flat).sum().backward()
        optimizer.zero_grad(set_to_none=True)

    full = timed(full_step, args.repeats)
    floor = timed(floor_step, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        cache, keys = make_cache(Path(tmp) / "cache", 4)
        research = SliceStackViews(num_slices=48, crop=192, **RESEARCH_AUGMENT)
        volumes_per_s = loader_rate(cache, keys, research, repeats=40)
        plain = SliceStackViews(num_slices=48, crop=192)
        plain_per_s = loader_rate(cache, keys, plain, repeats=40)
        seconds = prep = float("nan")
        if not args.skip_inference:
            seconds, prep = inference_seconds(
                Path(tmp), model, SliceStackViews(num_slices=48, crop=192)
            )
    print(
        f"backbone {args.backbone}, batch {args.batch} x {args.slices} slices of {args.crop}x{args.crop}, {torch.get_num_threads()} threads"
    )
    print(f"full training step        {full * 1000:9.1f} ms")
    print(f"encoder floor             {floor * 1000:9.1f} ms")
    print(f"full / floor              {full / floor:9.3f}   (target <= 1.10)")
    print(f"loader with augmentation  {volumes_per_s:9.1f} volumes/s per worker   (target >= 20)")
    print(f"loader without            {plain_per_s:9.1f} volumes/s per worker")
    print(
        f"inference, 200x512x512    {seconds:9.2f} s per series ({prep:.2f} s preprocessing; 48 slices, 4 flips)"
    )


if __name__ == "__main__":
    main()
