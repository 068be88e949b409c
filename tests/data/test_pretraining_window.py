"""One HU window for every pretraining source, in the configs and in the Python defaults."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.data import FLAREDataModule, RSNADataModule
from ctvoco.errors import UserError
from ctvoco.preprocessing import FLARE_WINDOW, PreprocessConfig


def composed(name: str, overrides: list[str]) -> dict:
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(config_name=name, overrides=[*overrides, "paths.output_dir=/tmp/x"])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def windows_of(section: dict) -> tuple[tuple[float, float], ...]:
    return PreprocessConfig.from_mapping(section["preprocess"]).windows


def test_flare_rsna_pretraining_uses_one_window_for_both_members() -> None:
    members = composed("pretrain", ["+experiment=flare_rsna"])["data"]["members"]
    assert set(members) == {"flare", "rsna"}
    assert windows_of(members["flare"]) == windows_of(members["rsna"])


@pytest.mark.parametrize(("module", "data"), [(FLAREDataModule, "flare"), (RSNADataModule, "rsna")])
def test_python_default_window_is_the_config_window(module, data, tmp_path) -> None:
    config = composed("pretrain", [f"data={data}"])["data"]
    built = module(root=str(tmp_path / "raw"), cache_dir=str(tmp_path / "cache"))
    assert built.preprocess.windows == windows_of(config)


def test_a_cache_built_with_another_window_is_refused(tmp_path) -> None:
    """Changing the default window must not silently reuse a cache of the old one."""
    cache = VolumeCache(tmp_path / "cache")
    cache.ensure_variant(PreprocessConfig(windows=(FLARE_WINDOW,)))
    default = PreprocessConfig.from_mapping(
        composed("pretrain", ["data=flare"])["data"]["preprocess"]
    )
    with pytest.raises(UserError, match=r"windows: \[\[-175.0, 250.0\]\] -> \[\[-150.0, 250.0\]\]"):
        cache.ensure_variant(default)
