"""``ctvoco.reports`` holds plots and evaluation: no Lightning, no LightningModule file."""

from __future__ import annotations

import pytest

from tests.layout import definitions, imports_any, package_modules

REPORTS = package_modules("ctvoco.reports")


@pytest.mark.parametrize(
    "forbidden", ["pytorch_lightning", "ctvoco.classify.module", "ctvoco.voco.module"]
)
def test_reports_do_not_import(forbidden: str) -> None:
    assert [m for m in REPORTS if imports_any(m, forbidden)] == []


def test_score_predictions_is_defined_once_outside_any_lightning_module() -> None:
    homes = definitions("score_predictions")
    assert len(homes) == 1, homes
    assert not imports_any(homes[0], "pytorch_lightning")
    assert not imports_any(homes[0], "torch")
