"""Classifier training-step overhead against the encoder floor, loader and inference speed.

- (a) a full training step (encoder, BiLSTM, pooling, five heads, weighted losses, backward,
  AdamW step) against (b) the floor: encoder forward + backward on the same ``B x S``
  slices from the same uint8 batch (target (a)/(b) <= 1.10). Both run in training mode
  after ``--warmup`` untimed steps each, then alternate (a b b a ...) for ``--repeats``
  timed steps each so that drift of a shared machine hits both alike; the median and the
  minimum of each are reported, and the ratio of the medians;
- the loader: ``SliceStackViews`` with training augmentation at the research configuration
  (48 slices, 192 crop) on memory-mapped ``(96, 256, 256)`` cache arrays, one process
  (= volumes/s per DataLoader worker; target >= 20);
- inference: seconds per series from a 200-slice 512x512 RLE DICOM series to probabilities
  (read + preprocess + model with test-time flips) for the research configuration.

Defaults are the research configuration (efficientnetv2_rw_s, B=4, S_f=48, 192 crop).
Run: ``python benchmarks/finetune_step.py [--device cuda]``; on a CPU
``--batch 1 --slices 8`` is a quick check that it works (the figures are then not the
research ones).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ctvoco.cache import VolumeCache
from ctvoco.classify import InjuryClassifier, SliceStackViews, injury_loss
from ctvoco.io import CTVolume
from ctvoco.preprocessing import PreprocessConfig, preprocess_series, preprocess_volume
from ctvoco.synth import SeriesTags, make_phantom, new_uid, write_dicom_series

RESEARCH_AUGMENT = {
    "random_crop": True,
    "flip_prob": 0.5,
    "rot90_prob": 0.25,
    "rotate_prob": 0.3,
    "histogram_shift_prob": 0.2,
    "contrast_prob": 0.2,
    "dropout_prob": 0.2,
}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def compare(
    a: Callable[[], None], b: Callable[[], None], device: torch.device, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of ``a`` and ``b``: warmed up, then timed alternately (a b b a ...)."""
    for _ in range(warmup):
        a()
        b()
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(repeats):
        order = ((a, times_a), (b, times_b))
        for fn, times in order if i % 2 == 0 else order[::-1]:
            times.append(seconds(fn, device))
    return times_a, times_b


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


def step_functions(
    args: argparse.Namespace, device: torch.device
) -> tuple[InjuryClassifier, Callable[[], None], Callable[[], None]]:
    """The model, (a) its full training step and (b) the encoder floor on one batch."""
    model = InjuryClassifier(backbone=args.backbone, tta=True).to(device).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True
    )
    images = torch.randint(
        0, 256, (args.batch, args.slices, 1, args.crop, args.crop), dtype=torch.uint8
    ).to(device)
    labels = torch.tensor([[0, 1, 2, 1, 0]] * args.batch, device=device)
    encoder = model.net.encoder

    def full_step() -> None:
        loss, _ = injury_loss(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def floor_step() -> None:
        # the same uint8 -> float slice batch the model's forward makes
        encoder(model._slices(images)).sum().backward()
        optimizer.zero_grad(set_to_none=True)

    return model, full_step, floor_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnetv2_rw_s")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--slices", type=int, default=48, help="S_f")
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps of each")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    model, full_step, floor_step = step_functions(args, device)
    full, floor = compare(full_step, floor_step, device, args.warmup, args.repeats)
    model.cpu()
    with tempfile.TemporaryDirectory() as tmp:
        cache, keys = make_cache(Path(tmp) / "cache", 4)
        research = SliceStackViews(num_slices=48, crop=192, **RESEARCH_AUGMENT)
        volumes_per_s = loader_rate(cache, keys, research, repeats=40)
        plain = SliceStackViews.plain(num_slices=48, crop=192)
        plain_per_s = loader_rate(cache, keys, plain, repeats=40)
        total = prep = float("nan")
        if not args.skip_inference:
            total, prep = inference_seconds(
                Path(tmp), model, SliceStackViews.plain(num_slices=48, crop=192)
            )
    ratio = statistics.median(full) / statistics.median(floor)
    print(
        f"backbone {args.backbone}, batch {args.batch} x {args.slices} slices of "
        f"{args.crop}x{args.crop}, {device.type}, {torch.get_num_threads()} threads, "
        f"{args.warmup} warm-up + {args.repeats} alternating timed steps each"
    )
    print("                           median ms     min ms")
    for name, times in (("(a) full training step", full), ("(b) encoder floor", floor)):
        median, best = statistics.median(times) * 1000, min(times) * 1000
        print(f"{name:<25} {median:10.1f} {best:10.1f}")
    print(f"full / floor              {ratio:9.3f}   (ratio of medians; target <= 1.10)")
    print(f"  (ratio of minima        {min(full) / min(floor):9.3f})")
    print(f"loader with augmentation  {volumes_per_s:9.1f} volumes/s per worker   (target >= 20)")
    print(f"loader without            {plain_per_s:9.1f} volumes/s per worker")
    print(
        f"inference, 200x512x512    {total:9.2f} s per series ({prep:.2f} s preprocessing; "
        "48 slices, 4 flips, CPU)"
    )


if __name__ == "__main__":
    main()
