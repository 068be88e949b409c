"""The preprocessing summary prints every error message as it is, brackets included."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ctvoco.cache.builder import BuildSummary, _print_summary
from ctvoco.cache.volume_cache import VolumeCache


def test_failure_table_prints_messages_verbatim(tmp_path: Path) -> None:
    error = "JPEG 2000 needs a plugin: pip install 'ctvoco[jpeg]'; shape [1, 2, 3] not in [bold]"
    summary = BuildSummary(
        total=1, processed=1, failed=[{"key": "rsna/[10]/1", "error": error, "status": "failed"}]
    )
    console = Console(record=True, width=400, color_system=None)
    _print_summary(console, summary, VolumeCache(tmp_path / "[cache]"))
    text = console.export_text()
    assert error in text, text
    assert "rsna/[10]/1" in text and f"{tmp_path / '[cache]'}:" in text, text
