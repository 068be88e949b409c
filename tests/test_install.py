"""The lock files, the Makefile, CI and the Dockerfile install the same pinned environment."""

from __future__ import annotations

import re
import shlex

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
IMAGE_LOCK = ROOT / "requirements" / "image.txt"
SCRIPT = "scripts/install-image.sh"


def _pins(path: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{path.name}: {line!r} is not pinned with =="
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def _makefile_torch() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text()
    found = re.search(r"^TORCH \?= (.+)$", text, re.MULTILINE)
    assert found, "Makefile: no TORCH ?= line"
    return dict(spec.split("==") for spec in found.group(1).split())


def _dockerfile_runs() -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line[4:].strip() for line in text.splitlines() if line.startswith("RUN ")]


def _core_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.sub(r"[-_.]+", "-", Requirement(d).name).lower() for d in project["dependencies"]}


def test_lock_pins_the_makefile_torch_build() -> None:
    torch = _makefile_torch()
    for lock in (LOCK, IMAGE_LOCK):
        pins = _pins(lock)
        assert {name: pins.get(name) for name in torch} == torch, lock.name


def test_image_lock_agrees_with_the_ci_lock_and_covers_the_core() -> None:
    ci, image = _pins(LOCK), _pins(IMAGE_LOCK)
    assert {name: ci.get(name) for name in image} == image
    assert _core_names() <= set(image)
    assert not {"pytest", "ruff", "mkdocs", "tensorboard", "optuna"} & set(image)


def test_lock_holds_every_core_and_test_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _core_names() | {
        re.sub(r"[-_.]+", "-", Requirement(d).name).lower()
        for extra in ("dev", "docs", "tensorboard", "sweep")
        for d in project["optional-dependencies"][extra]
        if not Requirement(d).marker or Requirement(d).marker.evaluate()
    }
    assert wanted - {"ctvoco"} <= set(_pins(LOCK))


def test_core_decoders_are_permissively_licensed() -> None:
    """No GPL decoder in the core: pylibjpeg-libjpeg (GPL-3.0) only in the jpeg extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "python-gdcm" in _core_names()
    assert "pylibjpeg-libjpeg" not in _core_names()
    assert any(d.startswith("pylibjpeg-libjpeg") for d in project["optional-dependencies"]["jpeg"])


def test_makefile_installs_with_the_lock_as_constraints() -> None:
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    assert installs, "Makefile: no pip install under $(VENV)/.installed"
    assert all("--constraint $(LOCK)" in line for line in installs), installs
    assert re.search(r"^LOCK := requirements/lock\.txt$", text, re.MULTILINE)


def test_dockerfile_installs_from_the_image_lock_with_the_ci_script() -> None:
    runs = _dockerfile_runs()
    steps = [
        shlex.split(part)[1]
        for run in runs
        for part in run.split("&&")
        if shlex.split(part)[:1] == [SCRIPT]
    ]
    assert steps == ["deps", "app", "smoke"], runs
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements/image.txt requirements/" in text
    # The dependency layer comes before the source is copied.
    assert text.index(f"RUN {SCRIPT} deps") < text.index("COPY src ")
    assert re.search(r"^USER (?!root)\S+", text, re.MULTILINE), "the image runs as root"
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)


def test_ci_runs_the_image_install_script() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(SCRIPT)} all ", ci, re.MULTILINE)


def test_install_script_uses_the_image_lock_and_the_smoke_commands() -> None:
    script = (ROOT / SCRIPT).read_text()
    assert 'lock="$root/requirements/image.txt"' in script
    assert '--requirement "$lock"' in script
    assert '--no-deps "$src"' in script
    for command in ("pip check", 'ctvoco-info" --version', 'ctvoco-pretrain" --help'):
        assert command in script, command


@pytest.mark.parametrize("path", ["requirements/image.txt", SCRIPT, "src", "conf"])
def test_dockerignore_lets_the_build_inputs_through(path: str) -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    assert any(line.rstrip("/") == f"!{path}" for line in lines), path
