"""``ctvoco-cv-report``: the command line is parsed before anything heavy is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

HEAVY = ("torch", "pytorch_lightning", "pandas", "matplotlib", "sklearn")

PROBE = """
import sys
from ctvoco.cli import cv_report
try:
    cv_report.main({argv!r})
except SystemExit as exc:
    print("exit", exc.code)
print("heavy", sorted(m for m in {heavy!r} if m in sys.modules))
"""


def _probe(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``main(argv)`` in a fresh interpreter; report its exit code and heavy modules."""
    code = PROBE.format(argv=argv, heavy=HEAVY)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )


def test_help_imports_no_heavy_module() -> None:
    result = _probe(["--help"])
    assert "usage: ctvoco-cv-report" in result.stdout
    assert "exit 0" in result.stdout
    assert "heavy []" in result.stdout, result.stdout.splitlines()[-1]


def test_an_argument_error_imports_no_heavy_module(tmp_path: Path) -> None:
    result = _probe([str(tmp_path), "--store-in", "a.ckpt"])
    assert "--store-in needs --fit-scaling" in result.stderr
    assert "exit 2" in result.stdout
    assert "heavy []" in result.stdout, result.stdout.splitlines()[-1]


def test_the_console_script_prints_its_help() -> None:
    result = subprocess.run(
        [str(BIN / "ctvoco-cv-report"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage: ctvoco-cv-report" in result.stdout
    assert "--fit-scaling" in result.stdout
