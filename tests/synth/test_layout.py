"""Layout of ctvoco.synth: modules named after domain concepts, each small, writer included."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYNTH = ROOT / "src" / "ctvoco" / "synth"
MAX_LINES = 500
MAX_FUNCTION_LINES = 70
MODULES = ("anatomy", "cohort", "dicom_writer", "labels", "lesions", "render")


def python_files(*folders: Path) -> list[Path]:
    """Every ``.py`` file under the given folders."""
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_domain_module_exists(module: str) -> None:
    assert importlib.util.find_spec(f"ctvoco.synth.{module}") is not None


@pytest.mark.parametrize("gone", ["ctvoco.synth.phantom", "ctvoco.io.dicom_writer"])
def test_old_module_is_gone(gone: str) -> None:
    assert importlib.util.find_spec(gone) is None


def test_every_synth_module_is_under_500_lines() -> None:
    long = {
        p.name: n
        for p in python_files(SYNTH)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) >= MAX_LINES
    }
    assert long == {}


def test_no_synth_function_is_over_70_lines() -> None:
    long = {}
    for path in python_files(SYNTH):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.name}:{node.name}"] = n
    assert long == {}


def test_reading_package_does_not_import_synthetic_data() -> None:
    offenders = [
        p.name
        for p in python_files(ROOT / "src" / "ctvoco" / "io")
        if "ctvoco.synth" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_nothing_imports_the_old_modules() -> None:
    old = re.compile(r"ctvoco\.synth\.phantom|ctvoco\.io\.dicom_writer")
    files = python_files(ROOT / "src", ROOT / "tests", ROOT / "benchmarks")
    files += sorted((ROOT / "docs").rglob("*.md"))
    offenders = [
        str(p.relative_to(ROOT))
        for p in files
        if p != Path(__file__).resolve() and old.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_package_exports_the_phantom_and_the_writer() -> None:
    synth = importlib.import_module("ctvoco.synth")
    for name in (*synth.__all__, "SeriesTags", "new_uid", "write_dicom_series"):
        assert getattr(synth, name) is not None, name


def test_api_page_references_resolve_and_cover_the_phantom() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = text.split("## Synthetic cohorts", 1)[1].split("\n## ", 1)[0]
    references = re.findall(r"^::: (ctvoco\.synth\.\S+)$", section, flags=re.MULTILINE)
    assert "ctvoco.synth.render.make_phantom" in references
    for reference in references:
        module, _, name = reference.rpartition(".")
        assert hasattr(importlib.import_module(module), name), reference


def test_small_test_phantom_is_defined_once() -> None:
    body = "((yy - 0.45 * h) / (0.33 * h))"
    copies = [
        str(p.relative_to(ROOT))
        for p in python_files(ROOT / "tests")
        if p != Path(__file__).resolve() and body in p.read_text(encoding="utf-8")
    ]
    assert copies == ["tests/conftest.py"]
