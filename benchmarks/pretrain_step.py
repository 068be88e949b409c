"""VoCo training-step overhead against its floor, loader throughput, and step memory.

(a) a full VoCo step: student forward (dropout, head), teacher forward under ``no_grad``,
    the three losses, backward, AdamW step, EMA update;
(b) the floor: student encoder forward + backward and teacher encoder forward under
    ``no_grad`` on the same images.

(a) does everything (b) does and more, so (a)/(b) >= 1 up to noise; target <= 1.15. To keep
the noise of a shared machine out of the ratio, both steps are warmed up, then timed in
``--repeats`` pairs whose order alternates (a b, b a, a b, ...) so that slow drifts hit both
alike; the median and the minimum of each are printed with the ratio of medians and the
ratio of minima (the minimum is the least disturbed run).

The loader part times ``VoCoViews`` at the research configuration (n=3, r=64, K=2, S=32,
Z=64) on memory-mapped ``(96, 256, 256)`` cache arrays in one single-threaded process
(= views/s per DataLoader worker; target >= 50): median and best of ``--loader-rounds``
rounds after a warm-up pass.

Defaults are the research configuration (efficientnet_b0, B=4, S=32, r=64, n=3, K=2).
Run: ``python benchmarks/pretrain_step.py [--batch 2 --slices 8]`` (smaller is quicker on a
CPU); on a shared machine prefer more ``--repeats`` to bigger sizes.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ctvoco.cache import VolumeCache
from ctvoco.io import CTVolume
from ctvoco.preprocessing import PreprocessConfig, preprocess_volume
from ctvoco.synth import make_phantom
from ctvoco.voco import VoCoPretrainer, VoCoViews, update_momentum


def high_water_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_cache(root: Path, count: int) -> tuple[VolumeCache, list[str]]:
    """Preprocessed phantoms at the default cache shape (96, 256, 256)."""
    cache = VolumeCache(root)
    keys = []
    for i in range(count):
        phantom = make_phantom(i, shape=(96, 256, 256), spacing=(4.0, 1.5, 1.5))
        volume = CTVolume(phantom.hu, phantom.spacing)
        cache.write(f"1_{i}", preprocess_volume(volume, PreprocessConfig()).array)
        keys.append(f"1_{i}")
    return cache, keys


def single_threaded() -> None:
    """Like a DataLoader worker: one torch thread, one OpenCV thread."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def loader_rates(
    cache: VolumeCache, keys: list[str], views: VoCoViews, per_round: int, rounds: int
) -> list[float]:
    """Views per second of one single-threaded process, one value per timed round."""
    threads = torch.get_num_threads()
    single_threaded()
    rng = np.random.default_rng(0)
    for key in keys:  # warm the page cache and the code paths, like a running loader
        views(cache.load(key), rng)
    rates = []
    for r in range(rounds):
        gc.collect()
        start = time.perf_counter()
        for i in range(per_round):
            views(cache.load(keys[(r * per_round + i) % len(keys)]), rng)
        rates.append(per_round / (time.perf_counter() - start))
    torch.set_num_threads(threads)
    return rates


def time_once(fn: Callable[[], None]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired_times(
    full: Callable[[], None], floor: Callable[[], None], warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds of ``full`` and ``floor``, run in pairs of alternating order after a warm-up."""
    for _ in range(warmup):
        full()
        floor()
    full_times, floor_times = [], []
    for i in range(repeats):
        if i % 2 == 0:
            full_times.append(time_once(full))
            floor_times.append(time_once(floor))
        else:
            floor_times.append(time_once(floor))
            full_times.append(time_once(full))
    return full_times, floor_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--slices", type=int, default=32, help="S")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--grid", type=int, default=3)
    parser.add_argument("--random", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8, help="timed (a)/(b) pairs")
    parser.add_argument("--warmup", type=int, default=2, help="untimed (a)/(b) pairs first")
    parser.add_argument("--loader-views", type=int, default=20, help="views per loader round")
    parser.add_argument("--loader-rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    for name in ("repeats", "loader_views", "loader_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        cache, keys = make_cache(Path(tmp), 4)
        research = VoCoViews(grid=3, crop_size=64, num_random=2, num_slices=32, depth=64)
        rates = loader_rates(cache, keys, research, args.loader_views, args.loader_rounds)
        views = VoCoViews(
            grid=args.grid,
            crop_size=args.crop,
            num_random=args.random,
            num_slices=args.slices,
            depth=max(64, args.slices),
        )
        rng = np.random.default_rng(1)
        samples = [views(cache.load(keys[i % len(keys)]), rng) for i in range(args.batch)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in ("random", "base", "targets")}

    module = VoCoPretrainer(backbone=args.backbone, views=views).train()
    optimizer = torch.optim.AdamW(
        [p for p in module.parameters() if p.requires_grad], lr=1e-4, amsgrad=True, foreach=True
    )
    crops = torch.cat([batch["random"], batch["base"]], dim=1)
    images = module._slices(crops)

    def full_step() -> None:
        emb = module.embed(batch["random"], batch["base"])
        out = module.losses(emb, batch["targets"])
        out.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        update_momentum(module.student_encoder, module.teacher_encoder, 0.99)
        update_momentum(module.student_head, module.teacher_head, 0.99)

    def floor_step() -> None:
        module.student_encoder(images).sum().backward()
        with torch.no_grad():
            module.teacher_encoder(images)
        optimizer.zero_grad(set_to_none=True)

    before = high_water_mib()
    full, floor = paired_times(full_step, floor_step, args.warmup, args.repeats)
    peak = high_water_mib()
    full_med, floor_med = statistics.median(full), statistics.median(floor)
    n_images = images.shape[0]
    print(
        f"backbone {args.backbone}, batch {args.batch} volumes x {args.random + args.grid**2} "
        f"crops x {args.slices} slices = {n_images} images of {args.crop}x{args.crop}, "
        f"{torch.get_num_threads()} threads; {args.warmup} warm-up + {args.repeats} timed "
        "pairs, alternating order"
    )
    print("                              median        min")
    print(f"(a) full VoCo step        {full_med * 1000:9.1f} ms {min(full) * 1000:9.1f} ms")
    print(f"(b) encoder floor         {floor_med * 1000:9.1f} ms {min(floor) * 1000:9.1f} ms")
    print(
        f"(a) / (b)                 {full_med / floor_med:9.3f}    {min(full) / min(floor):9.3f}"
        "      (ratio of medians, of minima; target <= 1.15)"
    )
    print(f"step throughput           {args.batch / full_med:9.2f} volumes/s (median step)")
    print(
        f"peak RSS                  {peak:9.0f} MiB ({peak - before:.0f} MiB more after the steps)"
    )
    print(
        f"loader, research config   {statistics.median(rates):9.1f} views/s per worker "
        f"(median of {len(rates)} rounds of {args.loader_views}; best {max(rates):.1f}; "
        "target >= 50)"
    )


if __name__ == "__main__":
    main()
