"""The package ships its configs in every install mode, and lists all its subpackages."""

from __future__ import annotations

import subprocess
import sys
import tarfile

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _subpackages() -> set[str]:
    src = ROOT / "src"
    return {
        ".".join(p.parent.relative_to(src).parts) for p in (src / "ctvoco").rglob("__init__.py")
    }


def test_pyproject_lists_every_subpackage() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    launcher = {"hydra_plugins", "hydra_plugins.ctvoco_launcher"}  # the multirun launcher
    assert _subpackages() | {"ctvoco.conf"} | launcher == listed


def test_lightning_pin_excludes_compromised_releases() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lightning = next(d for d in deps if d.startswith("pytorch-lightning"))
    assert ">=2.6.4" in lightning


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--sdist",
            "--wheel",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    return out


def _yaml_files() -> set[str]:
    return {
        f"ctvoco/conf/{p.relative_to(ROOT / 'conf').as_posix()}"
        for p in (ROOT / "conf").rglob("*.yaml")
    }


def test_wheel_contains_configs_and_modules(dists: Path) -> None:
    wheel = next(dists.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert _yaml_files() <= names
    assert "ctvoco/conf/__init__.py" in names
    modules = {
        f"ctvoco/{p.relative_to(ROOT / 'src' / 'ctvoco').as_posix()}"
        for p in (ROOT / "src" / "ctvoco").rglob("*.py")
    }
    assert modules <= names


def test_wheel_built_from_sdist_contains_configs(dists: Path, tmp_path: Path) -> None:
    sdist = next(dists.glob("*.tar.gz"))
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    unpacked = next(tmp_path.iterdir())
    out = tmp_path / "from_sdist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--wheel",
            "--outdir",
            str(out),
            str(unpacked),
        ],
        check=True,
        capture_output=True,
    )
    names = set(zipfile.ZipFile(next(out.glob("*.whl"))).namelist())
    assert _yaml_files() <= names
