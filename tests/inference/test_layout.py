"""Prediction is its own package, built on the data layer's walker and item tables."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src" / "ctvoco"
INFERENCE = SOURCE / "inference"
LIMIT = 500


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_prediction_left_the_model_package() -> None:
    assert importlib.util.find_spec("ctvoco.classify.predict") is None
    assert (INFERENCE / "predict.py").is_file()
    from ctvoco.inference import predict_submission

    assert predict_submission.__module__ == "ctvoco.inference.predict"


def test_the_touched_files_stay_small() -> None:
    files = [
        *INFERENCE.glob("*.py"),
        SOURCE / "classify" / "module.py",
        SOURCE / "data" / "datamodules.py",
        SOURCE / "data" / "rsna.py",
    ]
    long = {
        str(p.relative_to(SOURCE)): n for p in files if (n := len(_text(p).splitlines())) >= LIMIT
    }
    assert INFERENCE.is_dir() and long == {}


def test_only_the_rsna_module_walks_patient_and_series_folders() -> None:
    walkers = sorted(
        str(p.relative_to(SOURCE))
        for p in SOURCE.rglob("*.py")
        if "is_id(" in _text(p) and ".iterdir()" in _text(p)
    )
    assert walkers == ["data/rsna.py"]
    assert "walk_series_tree" in _text(INFERENCE / "discover.py")


def test_one_helper_makes_item_tables_of_a_cache() -> None:
    makers = sorted(
        str(p.relative_to(SOURCE))
        for p in SOURCE.rglob("*.py")
        if re.search(r"\[\"cache\"\]\s*=\s*str\(", _text(p))
    )
    assert makers == ["data/loading.py"]


def test_batches_become_probabilities_in_predict_step_only() -> None:
    text = "\n".join(_text(p) for p in INFERENCE.glob("*.py"))
    assert "predict_step(" in text
    assert "predict_proba(" not in text


def test_inference_writes_only_through_the_atomic_helpers() -> None:
    files = list(INFERENCE.glob("*.py"))
    assert files
    assert "atomic_write(" in _text(INFERENCE / "submission.py")
    for path in files:
        text = _text(path)
        for call in ("os.replace(", ".rename(", "tempfile", ".to_csv(path", ".write_text("):
            assert call not in text, f"{path.name}: {call}"
