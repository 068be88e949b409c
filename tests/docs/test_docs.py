"""The documentation stays true: every config key is in the reference, every page is in the
navigation, and the notebook-style example runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONF = ROOT / "conf"
REFERENCE = (DOCS / "config-reference.md").read_text()

# Groups whose every key is documented one by one; the others by option name.
KEYED_GROUPS = ("data", "model", "trainer", "paths")
TOP_LEVEL = ("pretrain", "finetune", "predict", "preprocess", "synth", "segment")


def leaf_keys(node: object, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of a YAML mapping (``defaults`` lists skipped)."""
    if not isinstance(node, dict):
        return [prefix]
    keys = []
    for key, value in node.items():
        if key == "defaults":
            continue
        keys += leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def documented(name: str) -> bool:
    return f"`{name}`" in REFERENCE or re.search(rf"`[^`]*\b{re.escape(name)}\b[^`]*`", REFERENCE)


@pytest.mark.parametrize("group", KEYED_GROUPS)
def test_config_reference_names_every_key_of_the_group(group: str) -> None:
    missing = set()
    for path in sorted((CONF / group).glob("*.yaml")):
        for key in leaf_keys(yaml.safe_load(path.read_text()) or {}):
            name = key.split(".")[-1]
            if not documented(name):
                missing.add(f"{path.relative_to(CONF)}: {key}")
    assert not missing, f"docs/config-reference.md does not mention: {sorted(missing)}"


def test_config_reference_names_every_top_level_key() -> None:
    missing = set()
    for program in TOP_LEVEL:
        for key in yaml.safe_load((CONF / f"{program}.yaml").read_text()) or {}:
            if key not in ("defaults", "trainer", "callbacks") and not documented(key):
                missing.add(f"{program}.yaml: {key}")
    assert not missing, f"docs/config-reference.md does not mention: {sorted(missing)}"


def test_config_reference_names_every_group_option() -> None:
    missing = [
        f"{path.parent.name}={path.stem}"
        for path in sorted(CONF.glob("*/*.yaml"))
        if path.parent.name != "hydra" and f"`{path.stem}`" not in REFERENCE
    ]
    assert not missing, f"docs/config-reference.md does not mention the options {missing}"


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert [p for p in pages if f": {p}" not in nav] == []


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_the_example_embeds_a_cached_volume(tmp_path: Path, monkeypatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from ctvoco.cache.volume_cache import VolumeCache
    from ctvoco.models.backbone import create_backbone

    rng = np.random.default_rng(0)
    cache = VolumeCache(tmp_path / "cache")
    volume = rng.integers(0, 256, size=(10, 48, 48), dtype=np.uint8)
    cache.write("10_20", volume)
    cache.write_record({"key": "10_20", "patient_id": "10", "series_id": "20", "status": "ok"})
    export = tmp_path / "export.pt"
    torch.save(create_backbone("test_efficientnet").state_dict(), export)

    code = python_blocks(DOCS / "example.md")[0]
    code = code.replace('"demo/cohort/cache/rsna"', repr(str(tmp_path / "cache")))
    code = code.replace('"demo/pretrain/export/test_efficientnet.pt"', repr(str(export)))
    assert str(tmp_path) in code, "the example's paths changed; update this test"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/example.md", "exec"), namespace)
    assert (tmp_path / "embedding.png").stat().st_size > 10_000
    assert namespace["embedding"].shape == (10, create_backbone("test_efficientnet").num_features)
    assert namespace["similarity"].shape == (10, 10)
