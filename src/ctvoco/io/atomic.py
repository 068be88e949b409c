"""Atomic file writes: a file is either absent, its old version, or complete.

Every file ctvoco writes for later use (checkpoints, exports, predictions, reports, cache
records) goes through :func:`atomic_write`: the content goes to a temporary file in the same
directory, is flushed to disk (``fsync``) and is renamed over the final name. A full disk, a
crash or a kill therefore never leaves a truncated file under the final name; at most a
temporary file whose name contains :data:`TMP_MARK`, the writer's host and process id.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"
"""Marks temporary files in a file name (``.<name>.tmp-<host>-<pid>``)."""


def tmp_name(path: Path) -> Path:
    """The temporary name this process writes ``path`` under, in ``path``'s directory."""
    return path.with_name(f".{path.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}")


def tmp_owner(path: Path) -> tuple[str, int] | None:
    """``(host, pid)`` of the process that writes the temporary file ``path``, if it is one."""
    _, _, tail = path.name.partition(TMP_MARK)
    host, _, pid = tail.rpartition("-")
    return (host, int(pid)) if pid.isdigit() else None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success it replaces ``path``.

    Args:
        path: The final file. Its directory must exist.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, UTF-8).

    Yields:
        The open temporary file. If the block raises, the temporary file is removed and
        ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports modes 'wb' and 'w', not {mode!r}")
    final = Path(path)
    tmp = tmp_name(final)
    try:
        encoding = "utf-8" if mode == "w" else None
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(final)
        _fsync_directory(final.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_csv_atomic(path: str | os.PathLike[str], frame: Any, **to_csv: Any) -> None:
    """``frame.to_csv(path, **to_csv)`` (a pandas ``DataFrame``), atomically."""
    with atomic_write(path, "w") as handle:
        frame.to_csv(handle, **to_csv)


def torch_save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch

    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
