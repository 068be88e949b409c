"""The benchmark scripts keep working (tiny sizes; the figures themselves are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_gpu_benchmark_cpu_smoke() -> None:
    out = run(
        "benchmarks/gpu.py", "--cpu-smoke", "--variants", "fp32", "bf16", "bf16+channels_last"
    )
    assert "device: CPU" in out
    for task in ("pretrain", "finetune"):
        assert sum(line.startswith(task) for line in out.splitlines()) == 3


@pytest.mark.slow
def test_step_benchmarks_small() -> None:
    out = run(
        "benchmarks/pretrain_step.py",
        "--backbone",
        "test_efficientnet",
        "--batch",
        "1",
        "--slices",
        "2",
        "--repeats",
        "1",
    )
    assert "(a) / (b)" in out and "views/s per worker" in out
    out = run(
        "benchmarks/finetune_step.py",
        "--backbone",
        "test_efficientnet",
        "--batch",
        "1",
        "--slices",
        "4",
        "--crop",
        "64",
        "--repeats",
        "1",
        "--skip-inference",
    )
    assert "full / floor" in out and "volumes/s per worker" in out


@pytest.mark.slow
def test_preprocess_benchmark_small() -> None:
    out = run(
        "benchmarks/preprocess.py",
        "--slices",
        "24",
        "--size",
        "128",
        "--series",
        "3",
        "--repeats",
        "1",
    )
    assert "end-to-end / decode" in out and "peak added / series" in out
