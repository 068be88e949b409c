"""The label schema and codec are one ground-floor module, ``ctvoco.labels``."""

from __future__ import annotations

import pytest

from tests.layout import defined_names, imports_any, module_path, package_modules

CODEC = (
    "TARGET_CLASSES",
    "PREDICTION_COLUMNS",
    "target_columns",
    "classes_from_labels",
    "labels_from_classes",
    "aggregate_predictions",
    "prevalence_predictions",
)


def test_schema_module_is_gone() -> None:
    assert module_path("ctvoco.schema") is None


@pytest.mark.parametrize("name", CODEC)
def test_labels_holds_the_schema_and_the_codec(name: str) -> None:
    assert name in defined_names("ctvoco.labels")


@pytest.mark.parametrize("name", CODEC)
def test_the_metric_module_keeps_only_scoring(name: str) -> None:
    assert name not in defined_names("ctvoco.metrics.rsna")


def test_the_metric_module_imports_labels() -> None:
    assert imports_any("ctvoco.metrics.rsna", "ctvoco.labels")


def test_labels_import_nothing_of_the_package_but_errors() -> None:
    path = module_path("ctvoco.labels")
    assert path is not None
    from tests.layout import imports_of

    inner = {m for m in imports_of("ctvoco.labels") if m.startswith("ctvoco")}
    assert {m.split(".")[1] for m in inner} <= {"errors"}


@pytest.mark.parametrize("module", package_modules("ctvoco.data"))
def test_data_modules_do_not_import_metrics(module: str) -> None:
    assert not imports_any(module, "ctvoco.metrics")
