"""``ctvoco-info``: the environment report to paste into a bug report."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import platform
import sys

PACKAGES = (
    "ctvoco",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "timm",
    "monai",
    "hydra-core",
    "omegaconf",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-rle",
    "python-gdcm",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "nibabel",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "iterative-stratification",
    "opencv-python-headless",
    "safetensors",
    "PyYAML",
    "wandb",
    "tensorboard",
)


def package_versions() -> dict[str, str]:
    """Installed version of each package ctvoco relies on (``-`` when absent)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions


def device_report() -> dict[str, str]:
    """CUDA build, cuDNN, visible accelerators and CPU threads, as seen by torch."""
    import torch

    report = {
        "torch CUDA build": str(torch.version.cuda or "none (CPU build)"),
        "CUDA available": str(torch.cuda.is_available()),
        "CPU threads": str(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        report["cuDNN"] = str(torch.backends.cudnn.version())
        report["bf16 supported"] = str(torch.cuda.is_bf16_supported())
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            report[f"cuda:{i}"] = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    return report


def report() -> str:
    """The full report as aligned ``key: value`` lines."""
    rows = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **package_versions(),
        **device_report(),
    }
    width = max(len(k) for k in rows)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in rows.items())


def main(argv: list[str] | None = None) -> None:
    """Print the ctvoco version (``--version``) or the whole environment report."""
    parser = argparse.ArgumentParser(prog="ctvoco-info", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the ctvoco version only")
    args = parser.parse_args(argv)
    print(metadata.version("ctvoco") if args.version else report())


if __name__ == "__main__":
    main()
