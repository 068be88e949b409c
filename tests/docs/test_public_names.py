"""The top-level names the API page promises (``import ctvoco``; ``ctvoco.X``) all exist."""

from __future__ import annotations

import pytest

import ctvoco


@pytest.mark.parametrize("name", ctvoco.__all__)
def test_every_top_level_name_resolves(name: str) -> None:
    assert getattr(ctvoco, name) is not None
    assert name in dir(ctvoco)
