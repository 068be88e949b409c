"""``protocol.json``: what each run of a study was, and the check that nothing leaked.

Every run folder holds a ``protocol.json``: the overrides it was started with and the
facts of the protocol (arm, fraction, seeds, which patients it is evaluated on, how its
checkpoint is selected). Re-running a study reuses a finished run only when its
``protocol.json`` is the same; one made under another protocol is started again.

:func:`seen_patients` reads back, from a finished run's resolved ``config.yaml``, the RSNA
patients its data module trained and validated on; the study refuses to report when any
of them is an evaluated patient.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ctvoco.errors import DataError
from ctvoco.io.atomic import write_text_atomic

PROTOCOL_FILE = "protocol.json"
"""The file of a run (and of the study) that records its protocol."""


def patients_digest(patient_ids: Iterable[object]) -> dict[str, Any]:
    """``{"count": n, "sha256": ...}`` of a set of patient ids (order does not matter)."""
    ids = sorted({str(p) for p in patient_ids})
    return {"count": len(ids), "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def read_protocol(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``protocol.json``; ``None`` when it is missing or unreadable."""
    try:
        value = json.loads((run_dir / PROTOCOL_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def prepare_run(run_dir: Path, protocol: dict[str, Any], done_file: str) -> bool:
    """Ready ``run_dir`` for a run with ``protocol``; returns whether it is already finished.

    A run is finished when its ``protocol.json`` is ``protocol`` and it wrote
    ``done_file``. A folder made under another protocol is deleted (said on stdout); an
    interrupted one is kept so that the run resumes from its last checkpoint.
    """
    if run_dir.exists() and read_protocol(run_dir) != protocol:
        print(f"ctvoco-study: {run_dir} was made under another protocol; starting it again")
        shutil.rmtree(run_dir)
    if (run_dir / done_file).exists():
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / PROTOCOL_FILE, json.dumps(protocol, indent=2) + "\n")
    return False


def write_protocol(path: Path, protocol: dict[str, Any]) -> None:
    """Write a study-level ``protocol.json``."""
    write_text_atomic(path, json.dumps(protocol, indent=2, default=str) + "\n")


def seen_patients(run_dir: Path) -> set[str]:
    """The RSNA patients a finished run trained or validated on, from its ``config.yaml``.

    Every ``RSNADataModule`` of the run's data (the module itself, or the members of a
    ``ConcatDataModule``) is rebuilt from the resolved config and asked for its splits,
    exactly as the run did; FLARE volumes are not RSNA patients.

    Raises:
        DataError: The run has no readable ``config.yaml``.
    """
    import yaml
    from hydra.utils import instantiate

    config = run_dir / "config.yaml"
    try:
        values = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{config}: cannot read the run's config ({exc})") from exc
    data = (values or {}).get("data") or {}
    nodes = list((data.get("members") or {}).values()) if "members" in data else [data]
    seen: set[str] = set()
    for node in nodes:
        if not str(node.get("_target_", "")).endswith("RSNADataModule"):
            continue
        module = instantiate(node)
        for split in module.split_items():
            seen.update(split["patient_id"].astype(str))
    return seen


def check_no_leak(run_dir: Path, evaluated: set[str]) -> dict[str, Any]:
    """The leakage record of a finished run: what it saw, and that none is evaluated.

    Returns:
        ``{"seen_rsna_patients": digest, "evaluated_seen": 0}``.

    Raises:
        DataError: The run saw evaluated patients (naming a few and the run).
    """
    seen = seen_patients(run_dir)
    leaked = sorted(seen & evaluated)
    if leaked:
        raise DataError(
            f"{run_dir} trained or validated on {len(leaked)} evaluated patient(s) "
            f"({', '.join(leaked[:5])}): its score would be optimistic; the study stops"
        )
    return {"seen_rsna_patients": patients_digest(seen), "evaluated_seen": 0}
