"""The benchmark scripts keep working (tiny sizes; the figures themselves are not checked)."""

from __future__ import annotations

import functools
import importlib.util
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


@functools.cache
def load_script(name: str):
    """Import ``benchmarks/<name>.py`` as a module (dataclasses need it in sys.modules)."""
    spec = importlib.util.spec_from_file_location(
        f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


PEAK_CASES = [
    ("NVIDIA H100 PCIe", "bf16", 756.0),
    ("NVIDIA H100 PCIe", "fp32", 51.0),
    ("NVIDIA H100 80GB HBM3", "bf16", 989.0),
    ("NVIDIA H100 80GB HBM3", "fp32", 67.0),
    ("NVIDIA H200", "bf16", 989.0),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
    ("Tesla T4", "bf16", None),
]


@pytest.mark.parametrize(("name", "precision", "peak"), PEAK_CASES)
def test_gpu_benchmark_peak_by_device_name(name: str, precision: str, peak) -> None:
    assert load_script("gpu").peak_tflops(name, precision) == peak


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
