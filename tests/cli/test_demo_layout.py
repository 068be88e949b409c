"""The demo is a program of the application floor: under ``ctvoco.cli``, in no import circle."""

from __future__ import annotations

import sys

import pytest

from tests.layout import ROOT, imports_any, imports_of_source, module_path, package_modules

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEMO_MODULES = (
    "ctvoco.cli.demo",
    "ctvoco.cli.demo_paths",
    "ctvoco.cli.demo_report",
    "ctvoco.cli.demo_jobs",
)


def test_import_reader_sees_lazy_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ctvoco.cli.demo import DemoPaths\n"
        "def f():\n    import ctvoco.metrics.rsna\n"
        "from . import plots\n"
    )
    found = imports_of_source(source, "ctvoco.reports.demo")
    assert {"ctvoco.cli.demo", "ctvoco.metrics.rsna", "ctvoco.reports.plots"} <= found


@pytest.mark.parametrize("module", DEMO_MODULES)
def test_the_demo_lives_under_cli(module: str) -> None:
    assert module_path(module) is not None


@pytest.mark.parametrize("module", ["ctvoco.demo", "ctvoco.reports.demo"])
def test_no_demo_module_is_left_outside_cli(module: str) -> None:
    assert module_path(module) is None


@pytest.mark.parametrize("module", ["ctvoco.cli.demo_report", "ctvoco.cli.demo_jobs"])
def test_the_demo_helpers_do_not_import_the_program(module: str) -> None:
    assert not imports_any(module, "ctvoco.cli.demo")


def test_console_script_runs_the_demo_under_cli() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ctvoco-demo"] == "ctvoco.cli.demo:main"


def test_the_study_takes_the_job_runner_from_cli_demo_jobs() -> None:
    assert imports_any("ctvoco.study.runs", "ctvoco.cli.demo_jobs")
    source = (ROOT / "benchmarks" / "label_efficiency.py").read_text()
    found = imports_of_source(source, "benchmarks.label_efficiency")
    assert found & {"ctvoco.study.main", "ctvoco.study"}
    assert not any(m == "ctvoco.demo" or m.startswith("ctvoco.demo.") for m in found)


def test_reports_import_no_program() -> None:
    offenders = [m for m in package_modules("ctvoco.reports") if imports_any(m, "ctvoco.cli")]
    assert offenders == []
