"""Training throughput on one GPU: precision, memory format, compilation; loader vs model.

For VoCo pretraining (research configuration: efficientnet_b0, B=4 volumes, 11 crops x 32
slices of 64x64) and classifier finetuning (efficientnetv2_rw_s, B=4 x 48 slices of 192x192)
it measures, per variant — fp32, bf16-mixed, bf16-mixed + channels_last, and + torch.compile:

- training throughput (volumes/s; full step: forward, losses, backward, AdamW, EMA);
- peak GPU memory of the step;
- model FLOP utilisation: FLOPs of one step (counted with ``torch.utils.flop_counter``)
  per second, over the device's dense peak for that precision;

and the loader's volumes/s per worker process next to it (times the CPU workers available),
so the table shows whether data or model limits. One table, with the device name.

Run: ``python benchmarks/gpu.py`` on a GPU machine; ``python benchmarks/gpu.py --cpu-smoke``
runs every code path with tiny sizes on the CPU (a check that the script works, no figures).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ctvoco.cache import VolumeCache
from ctvoco.classify import InjuryClassifier, SliceStackViews, injury_loss
from ctvoco.io import CTVolume
from ctvoco.preprocessing import PreprocessConfig, preprocess_volume
from ctvoco.synth import make_phantom
from ctvoco.voco import VoCoPretrainer, VoCoViews, update_momentum

# Dense peak TFLOP/s by (device name fragment, precision), most specific fragment first; fp32
# means TF32 tensor cores off. The H100 PCIe card is slower than the SXM module; the H200
# has the SXM module's compute.
PEAK_TFLOPS: tuple[tuple[str, str, float], ...] = (
    ("H100 PCIe", "bf16", 756.0),
    ("H100 PCIe", "fp32", 51.0),
    ("H100", "bf16", 989.0),
    ("H100", "fp32", 67.0),
    ("H200", "bf16", 989.0),
    ("H200", "fp32", 67.0),
    ("A100", "bf16", 312.0),
    ("A100", "fp32", 19.5),
)
VARIANTS = ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile")


@dataclass
class Sizes:
    """Benchmark sizes (the research configuration, or tiny for --cpu-smoke)."""

    pretrain_backbone: str = "efficientnet_b0"
    finetune_backbone: str = "efficientnetv2_rw_s"
    batch: int = 4
    voco_slices: int = 32
    crop: int = 64
    grid: int = 3
    clf_slices: int = 48
    clf_crop: int = 192
    cache_shape: tuple[int, int, int] = (96, 256, 256)
    warmup: int = 3
    steps: int = 10


SMOKE = Sizes("test_efficientnet", "test_efficientnet", 1, 2, 32, 2, 4, 64, (16, 96, 96), 1, 1)


@dataclass
class Result:
    task: str
    variant: str
    volumes_per_s: float
    peak_gib: float
    mfu: float


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} threads)"


def peak_tflops(name: str, precision: str) -> float | None:
    """Dense peak TFLOP/s of the device called ``name`` (as CUDA reports it), if known."""
    for fragment, prec, value in PEAK_TFLOPS:
        if fragment.lower() in name.lower() and prec == precision:
            return value
    return None


def make_cache(root: Path, sizes: Sizes, count: int = 4) -> tuple[VolumeCache, list[str]]:
    cache, keys = VolumeCache(root), []
    config = PreprocessConfig(shape=sizes.cache_shape)
    for i in range(count):
        phantom = make_phantom(i, shape=(64, 160, 160))
        cache.write(
            f"1_{i}", preprocess_volume(CTVolume(phantom.hu, phantom.spacing), config).array
        )
        keys.append(f"1_{i}")
    return cache, keys


def loader_rate(cache: VolumeCache, keys: list[str], views, repeats: int = 20) -> float:
    """Views per second of one single-threaded worker."""
    import cv2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    views(cache.load(keys[0]), rng)
    start = time.perf_counter()
    for i in range(repeats):
        views(cache.load(keys[i % len(keys)]), rng)
    torch.set_num_threads(threads)
    return repeats / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    step: Callable[[], None], device: torch.device, warmup: int, steps: int
) -> tuple[float, float]:
    """Median seconds per step and peak memory (GiB) of the timed steps."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    )
    return statistics.median(times), peak


def count_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def autocast(device: torch.device, variant: str):
    if variant == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def pretrain_step_fn(
    sizes: Sizes, variant: str, device: torch.device, batch: dict[str, torch.Tensor]
) -> Callable[[], None]:
    module = VoCoPretrainer(
        backbone=sizes.pretrain_backbone,
        views=VoCoViews(grid=sizes.grid, crop_size=sizes.crop, num_random=2),
        channels_last="channels_last" in variant,
        compile="compile" in variant,
    ).to(device)
    module.train()
    optimizer = torch.optim.AdamW(
        [p for p in module.parameters() if p.requires_grad], lr=1e-4, amsgrad=True, foreach=True
    )

    def step() -> None:
        with autocast(device, variant):
            emb = module.embed(batch["random"], batch["base"])
            loss = module.losses(emb, batch["targets"]).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        update_momentum(module.student_encoder, module.teacher_encoder, 0.99)
        update_momentum(module.student_head, module.teacher_head, 0.99)

    return step


def finetune_step_fn(
    sizes: Sizes, variant: str, device: torch.device, batch: dict[str, torch.Tensor]
) -> Callable[[], None]:
    module = InjuryClassifier(
        backbone=sizes.finetune_backbone,
        channels_last="channels_last" in variant,
        compile="compile" in variant,
    ).to(device)
    module.train()
    optimizer = torch.optim.AdamW(
        [p for p in module.parameters() if p.requires_grad], lr=1e-4, foreach=True
    )

    def step() -> None:
        with autocast(device, variant):
            loss, _ = injury_loss(module(batch["image"]), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def batches(
    cache: VolumeCache, keys: list[str], sizes: Sizes, device: torch.device
) -> tuple[dict, dict, VoCoViews, SliceStackViews]:
    rng = np.random.default_rng(0)
    voco = VoCoViews(
        grid=sizes.grid,
        crop_size=sizes.crop,
        num_random=2,
        num_slices=sizes.voco_slices,
        depth=max(64, sizes.voco_slices),
    )
    samples = [voco(cache.load(keys[i % len(keys)]), rng) for i in range(sizes.batch)]
    pretrain = {
        k: torch.stack([s[k] for s in samples]).to(device) for k in ("random", "base", "targets")
    }
    clf = SliceStackViews.plain(
        num_slices=sizes.clf_slices,
        crop=sizes.clf_crop,
        random_crop=True,
        flip_prob=0.5,
        rotate_prob=0.3,
        dropout_prob=0.2,
    )
    images = torch.stack(
        [clf(cache.load(keys[i % len(keys)]), rng)["image"] for i in range(sizes.batch)]
    )
    finetune = {
        "image": images.to(device),
        "labels": torch.tensor([[0, 1, 2, 1, 0]] * sizes.batch, device=device),
    }
    return pretrain, finetune, voco, clf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny sizes on the CPU: check every code path"
    )
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    sizes = SMOKE if args.cpu_smoke else Sizes()
    if args.steps:
        sizes.steps = args.steps
    if args.cpu_smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    else:
        raise SystemExit("no GPU found; use --cpu-smoke to check the script on a CPU")
    name = device_name(device)
    workers = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache, keys = make_cache(Path(tmp), sizes)
        pretrain_batch, finetune_batch, voco_views, clf_views = batches(cache, keys, sizes, device)
        loaders = {
            "pretrain": loader_rate(cache, keys, voco_views),
            "finetune": loader_rate(cache, keys, clf_views),
        }
    results: list[Result] = []
    for task, factory, batch in (
        ("pretrain", pretrain_step_fn, pretrain_batch),
        ("finetune", finetune_step_fn, finetune_batch),
    ):
        for variant in args.variants:
            torch.manual_seed(0)
            step = factory(sizes, variant, device, batch)
            seconds, peak = measure(step, device, sizes.warmup, sizes.steps)
            flops = (
                count_flops(step)
                if "compile" not in variant
                else count_flops(factory(sizes, "bf16", device, batch))
            )
            precision = "fp32" if variant == "fp32" else "bf16"
            peak_flops = peak_tflops(name, precision)
            mfu = flops / seconds / (peak_flops * 1e12) if peak_flops else float("nan")
            results.append(Result(task, variant, sizes.batch / seconds, peak, mfu))
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"device: {name}; loader workers available: {workers}")
    print(
        f"{'task':<9} {'variant':<27} {'volumes/s':>10} {'peak GiB':>9} {'MFU':>7} {'loader vol/s (1 worker / all)':>31}"
    )
    for r in results:
        per_worker = loaders[r.task]
        loader = f"{per_worker:.1f} / {per_worker * workers:.0f}"
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu == r.mfu else "n/a"
        print(
            f"{r.task:<9} {r.variant:<27} {r.volumes_per_s:>10.2f} {r.peak_gib:>9.2f} {mfu:>7} {loader:>31}"
        )


if __name__ == "__main__":
    main()
