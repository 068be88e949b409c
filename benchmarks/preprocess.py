"""Preprocessing throughput against the decoder's own speed, and peak memory.

On one 200-slice 512x512 RLE Lossless series (a synthetic phantom written as real DICOM):

- decode-only: read + decode every file with the decoder the reader uses (slices/s);
- end-to-end: ``preprocess_series`` (read, sort, rescale, window, body crop, resize; slices/s);
- their ratio (target >= 0.5, stretch 0.7);
- peak RSS of a fresh process doing one end-to-end run, above the same process after imports
  (target <= 4 x the series' decoded int16 size);
- cache building over a tree of several series with ``num_workers=0`` and ``2`` (series/s).

Run: ``python benchmarks/preprocess.py [--slices 200] [--size 512] [--series 4]``.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from rich.console import Console

from ctvoco.cache import VolumeCache, build_cache
from ctvoco.io import series_files
from ctvoco.io.series import SeriesSource
from ctvoco.preprocessing import PreprocessConfig, preprocess_series
from ctvoco.synth import SeriesTags, make_phantom, new_uid, write_dicom_series

PEAK_SCRIPT = """
import json, sys
from pathlib import Path
from ctvoco.preprocessing import preprocess_series
import ctvoco.io, cv2, pydicom, numpy

def high_water_kib():  # VmHWM is per process image (ru_maxrss would carry the parent's peak)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

before = high_water_kib()
preprocess_series(sys.argv[1])
after = high_water_kib()
print(json.dumps({"before_kib": before, "after_kib": after}))
"""


def write_series(folder: Path, slices: int, size: int, seed: int) -> Path:
    phantom = make_phantom(
        seed,
        shape=(slices, size, size),
        spacing=(400.0 / slices, 0.75 * 512 / size, 0.75 * 512 / size),
    )
    tags = SeriesTags(str(seed), new_uid(f"bench/{seed}"), new_uid(f"bench-study/{seed}"))
    write_dicom_series(
        phantom.hu, folder, phantom.spacing, tags, shuffle_names=np.random.default_rng(seed)
    )
    return folder


def decode_only(folder: Path) -> float:
    """Seconds to read and decode every slice with pylibjpeg-rle."""
    files = series_files(folder)
    start = time.perf_counter()
    for path in files:
        ds = pydicom.dcmread(path)
        ds.pixel_array_options(decoding_plugin="pylibjpeg")
        _ = ds.pixel_array
    return time.perf_counter() - start


def end_to_end(folder: Path) -> float:
    start = time.perf_counter()
    preprocess_series(folder)
    return time.perf_counter() - start


def best_of(fn, folder: Path, repeats: int) -> float:
    return min(fn(folder) for _ in range(repeats))


def peak_memory(folder: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(folder)], capture_output=True, text=True, check=True
    )
    values = json.loads(out.stdout.strip().splitlines()[-1])
    return {"before": values["before_kib"] / 1024, "after": values["after_kib"] / 1024}  # MiB


def cache_rate(sources: list[SeriesSource], root: Path, workers: int) -> float:
    cache = VolumeCache(root / f"cache_w{workers}")
    summary = build_cache(
        sources, cache, PreprocessConfig(), num_workers=workers, console=Console(file=io.StringIO())
    )
    return summary.processed / summary.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--series", type=int, default=16, help="series in the multi-series tree")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = write_series(root / "series0", args.slices, args.size, seed=0)
        decode = best_of(decode_only, folder, args.repeats)
        e2e = best_of(end_to_end, folder, args.repeats)
        decode_rate, e2e_rate = args.slices / decode, args.slices / e2e
        memory = peak_memory(folder)
        series_mib = args.slices * args.size * args.size * 2 / 2**20
        sources = [
            SeriesSource(
                f"1_{i}",
                str(
                    folder
                    if i == 0
                    else write_series(root / f"series{i}", args.slices // 2, args.size, i)
                ),
            )
            for i in range(args.series)
        ]
        serial = cache_rate(sources, root, 0)
        parallel = cache_rate(sources, root, 2)
    added = memory["after"] - memory["before"]
    print(
        f"series: {args.slices} x {args.size} x {args.size} RLE Lossless, decoded int16 {series_mib:.0f} MiB"
    )
    print(f"decode-only            {decode_rate:8.1f} slices/s")
    print(f"end-to-end             {e2e_rate:8.1f} slices/s")
    print(f"end-to-end / decode    {e2e_rate / decode_rate:8.2f}   (target >= 0.50, stretch 0.70)")
    print(
        f"peak RSS               {memory['after']:8.0f} MiB ({added:.0f} MiB above the process after imports)"
    )
    print(f"peak added / series    {added / series_mib:8.2f}   (target <= 4.0)")
    print(f"cache, 1 process       {serial:8.2f} series/s ({args.series} series)")
    print(f"cache, num_workers=2   {parallel:8.2f} series/s")
    print(f"num_workers=2 / 1      {parallel / serial:8.2f}")


if __name__ == "__main__":
    main()
