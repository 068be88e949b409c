"""Where prediction writes: checked before any series is read, with advice naming the key."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ctvoco.errors import UserError


def check_output(output: Path) -> None:
    """Fail now, not after inference, when the submission cannot be written to ``output``.

    Raises:
        UserError: ``output`` is a directory, or its directory cannot be created or
            written (a file in the way, no permission, a full disk).
    """
    if output.is_dir():
        raise UserError(
            f"output={output} is a directory; name the submission file, e.g. "
            f"output={output / 'submission.csv'}"
        )
    check_writable_dir(output.parent, f"output={output}", "output", "a file")


def check_writable_dir(directory: Path, setting: str, key: str, where: str = "a directory") -> None:
    """Create ``directory`` if needed and check that a file can be written in it.

    A few bytes are written, flushed to the disk and removed again (an empty file could be
    created even on a full disk).

    Args:
        directory: Where the program will write.
        setting: ``key=value`` that chose it, how the message starts.
        key: The config key to change, named in the advice.
        where: What ``key`` names: ``a directory`` or ``a file``.

    Raises:
        UserError: Naming ``setting``, the directory and the cause.
    """
    blocker = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UserError(
            f"{setting}: cannot write to {directory}: {blocker} is not a directory; "
            f"{write_advice(None, key, where)}"
        )
    probe = directory / f".write-test-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ctvoco write test\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(
            f"{setting}: cannot write to {directory} ({exc.strerror or exc}); "
            f"{write_advice(exc, key, where)}"
        ) from exc


def write_advice(exc: OSError | None, key: str, where: str = "a directory") -> str:
    """What to do about a failed write, naming the config key that picks the place.

    ``where`` is what the key names: ``a directory`` or ``a file``.
    """
    if exc is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free some space there or set {key}= to {where} on another disk"
    if where == "a directory":
        return f"set {key}= to a writable directory"
    return f"set {key}= to {where} in a writable directory"
