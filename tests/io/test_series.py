"""``ctvoco.io.series``: one series to read (:class:`SeriesSource`) and the key check."""

from __future__ import annotations

import pytest

from tests.layout import defined_names, imports_any, package_modules


@pytest.mark.parametrize("name", ["SeriesSource", "check_key", "KEY_PATTERN"])
def test_series_names_live_in_io_series(name: str) -> None:
    assert name in defined_names("ctvoco.io.series")
    assert name not in defined_names("ctvoco.cache.builder")
    assert name not in defined_names("ctvoco.cache.volume_cache")


@pytest.mark.parametrize("module", package_modules("ctvoco.data"))
def test_data_discovery_does_not_need_the_cache_builder_for_sources(module: str) -> None:
    from tests.layout import imports_of

    assert "ctvoco.cache.builder.SeriesSource" not in imports_of(module)
    assert "ctvoco.cache.SeriesSource" not in imports_of(module)


def test_io_series_stays_below_the_cache() -> None:
    assert not imports_any("ctvoco.io.series", "ctvoco.cache")


def test_a_source_with_a_path_as_key_is_refused() -> None:
    from ctvoco.errors import DataError
    from ctvoco.io.series import SeriesSource

    with pytest.raises(DataError, match="invalid cache key"):
        SeriesSource("../etc", "/data/x")
    assert SeriesSource("10004_21057", "/data/x", "10004", "21057").key == "10004_21057"
