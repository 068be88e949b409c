"""Tests for ctvoco.io.atomic: a file is its old version or its complete new one, never a part."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ctvoco
from ctvoco.io.atomic import (
    TMP_MARK,
    atomic_write,
    tmp_owner,
    torch_save_atomic,
    write_csv_atomic,
    write_text_atomic,
)


class DiskFull(OSError):
    pass


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    write_text_atomic(target, "old")
    with pytest.raises(DiskFull), atomic_write(target, "w") as handle:
        handle.write("new but only half of i")
        raise DiskFull(28, "No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "submission.csv"
    with pytest.raises(DiskFull), atomic_write(target, "w") as handle:
        handle.write("patient_id,")
        raise DiskFull(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_writes_land_complete(tmp_path: Path) -> None:
    import pandas as pd
    import torch

    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]})
    write_csv_atomic(tmp_path / "t.csv", frame, index=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), frame)
    torch_save_atomic({"w": torch.arange(3)}, tmp_path / "w.ckpt")
    assert torch.load(tmp_path / "w.ckpt", weights_only=True)["w"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "w.ckpt"]


def test_the_temporary_name_says_who_writes_it(tmp_path: Path) -> None:
    import os
    import socket

    with atomic_write(tmp_path / "x.json", "w") as handle:
        seen = list(tmp_path.iterdir())
        handle.write("{}")
    assert len(seen) == 1 and TMP_MARK in seen[0].name
    assert tmp_owner(seen[0]) == (socket.gethostname(), os.getpid())


def test_rejects_append_and_read_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="modes"), atomic_write(tmp_path / "x", "a"):
        pass


# Calls that write a file for later use. Inside ``with atomic_write(...) as <handle>`` they
# write to the handle; anywhere else they would write the final file in place.
WRITERS = {"write_text", "write_bytes", "savefig", "to_csv", "to_parquet", "to_json"}


def _in_place_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    handles: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                name = getattr(getattr(call, "func", None), "id", None) or getattr(
                    getattr(call, "func", None), "attr", None
                )
                if name == "atomic_write" and isinstance(item.optional_vars, ast.Name):
                    handles.add(item.optional_vars.id)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func = node.func
        is_torch_save = (
            func.attr == "save"
            and isinstance(func.value, ast.Name)
            and func.value.id in ("torch", "np", "numpy")
        )
        if func.attr not in WRITERS and not is_torch_save:
            continue
        position = 1 if is_torch_save and func.value.id == "torch" else 0
        target = node.args[position] if len(node.args) > position else None
        if func.attr == "to_csv" and target is None:
            continue  # returns the text
        if isinstance(target, ast.Name) and target.id in handles:
            continue
        found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {ast.unparse(node)[:80]}")
    return found


PACKAGE = Path(ctvoco.__file__).parent


def test_every_file_the_package_writes_goes_through_the_atomic_helper() -> None:
    sources = [p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "io" / "atomic.py"]
    sources += sorted((PACKAGE.parent.parent / "benchmarks").glob("*.py"))
    found = [line for path in sources for line in _in_place_writes(path)]
    assert not found, "\n".join(found)


# Calls that move a finished temporary file over its final name, or make one.
RENAMES = {("os", "replace"), ("os", "rename"), ("shutil", "move")}


def _renames(source: str) -> list[int]:
    """Lines of ``source`` that rename files or make temporary files by hand.

    ``os.replace`` / ``os.rename`` / ``shutil.move``, ``tempfile`` in any form, and
    ``<path>.replace(<target>)`` / ``<path>.rename(<target>)`` with one argument (the
    :class:`pathlib.Path` methods; ``str.replace`` takes two).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] == "tempfile" for n in names):
                found.append(node.lineno)
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        if (owner, node.func.attr) in RENAMES or (
            node.func.attr in ("replace", "rename") and len(node.args) == 1 and owner != "os"
        ):
            found.append(node.lineno)
    return found


def test_the_rename_finder_finds_hand_written_atomic_writes() -> None:
    source = (
        "import os, tempfile\n"
        "def save(path, text):\n"
        "    tmp = path.with_suffix('.tmp')\n"
        "    tmp.write_text(text)\n"
        "    tmp.replace(path)\n"
        "    os.replace(tmp, path)\n"
        "    name = str(path).replace('a', 'b')\n"
    )
    assert _renames(source) == [1, 5, 6]


def test_only_the_atomic_helper_renames_files() -> None:
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := _renames(path.read_text()))
    }
    atomic = found.pop("io/atomic.py", [])
    assert found == {}
    assert len(atomic) == 1  # the one rename, inside atomic_write


@pytest.mark.parametrize(
    "helper", ["write_text_atomic", "write_bytes_atomic", "write_csv_atomic", "torch_save_atomic"]
)
def test_every_write_helper_is_built_on_atomic_write(helper: str) -> None:
    tree = ast.parse((PACKAGE / "io" / "atomic.py").read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == helper)
    calls = {
        n.func.id
        for n in ast.walk(function)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert "atomic_write" in calls
