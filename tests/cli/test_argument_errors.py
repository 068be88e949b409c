"""A library error names its argument; the command line names it by its config key."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import ctvoco
from ctvoco.cli.components import build
from ctvoco.cli.user_errors import user_error_message
from ctvoco.errors import ArgumentError, UserError
from ctvoco.preprocessing.pipeline import PreprocessConfig


def test_an_argument_error_names_its_argument_and_can_be_placed_in_a_config_node() -> None:
    error = ArgumentError("pooling", " must be one of avg, flatten; got 'x'")
    assert isinstance(error, UserError) and error.argument == "pooling"
    assert str(error) == "pooling must be one of avg, flatten; got 'x'"
    placed = error.within("model.module")
    assert placed.argument == "model.module.pooling"
    assert str(placed) == "model.module.pooling must be one of avg, flatten; got 'x'"


def test_the_cli_prefixes_the_argument_with_the_node_being_instantiated() -> None:
    cfg = OmegaConf.create(
        {
            "model": {
                "module": {
                    "_target_": "ctvoco.errors.look_up_option",
                    "name": "pooling",
                    "value": "flaten",
                    "options": ["avg", "flatten"],
                }
            }
        }
    )
    with pytest.raises(Exception) as caught:
        instantiate(cfg.model.module)
    assert user_error_message(caught.value) == (
        "model.module.pooling must be one of avg, flatten; got 'flaten'; did you mean 'flatten'?"
    )


def test_preprocessing_errors_name_the_preprocess_field() -> None:
    with pytest.raises(ArgumentError) as caught:
        PreprocessConfig(windows=((250, -150),))
    assert caught.value.argument == "preprocess.windows"
    assert str(caught.value).startswith("preprocess.windows must be [low, high] HU pairs")


def test_a_preprocessing_error_is_named_by_the_data_section_it_came_from() -> None:
    cfg = OmegaConf.create(
        {
            "data": {
                "_target_": "ctvoco.preprocessing.pipeline.PreprocessConfig.from_mapping",
                "mapping": {"scaling": "fixd"},
            }
        }
    )
    with pytest.raises(Exception) as caught:
        instantiate(cfg.data)
    assert user_error_message(caught.value) == (
        "data.preprocess.scaling must be one of fixed, per_slice_minmax; got 'fixd'; "
        "did you mean 'fixed'?"
    )


TINY_MODEL = {"backbone": "test_efficientnet", "hidden": 8}
"""A classifier small enough to build in a test."""


# -- the nodes the programs build with extra arguments --------------------------------------
def _data_config(tmp_path: Path, **options: Any) -> DictConfig:
    """A run config whose ``data`` is a tiny RSNA data module with ``options``."""
    node = {
        "_target_": "ctvoco.data.RSNADataModule",
        "root": str(tmp_path / "rsna"),
        "cache_dir": str(tmp_path / "cache"),
        "num_workers": 0,
        "preprocess_workers": 0,
        **options,
    }
    return OmegaConf.create({"data": node})


def _built_error(cfg: DictConfig, key: str, **kwargs: Any) -> ArgumentError:
    """The :class:`ArgumentError` that ``build(cfg, key, **kwargs)`` raises."""
    with pytest.raises(ArgumentError) as caught:
        build(cfg, key, **kwargs)
    return caught.value


def test_build_places_an_argument_error_in_the_data_node(tmp_path: Path) -> None:
    error = _built_error(_data_config(tmp_path, fold=5), "data", views=None, val_views=None)
    assert error.argument == "data.fold"
    assert str(error) == "data.fold must be in 0..4 (or null); got 5"


def test_build_places_a_nested_argument_in_the_data_node(tmp_path: Path) -> None:
    cfg = _data_config(tmp_path, preprocess={"scaling": "fixd"})
    error = _built_error(cfg, "data", views=None, val_views=None)
    assert error.argument == "data.preprocess.scaling"


def test_build_names_the_full_key_of_a_node_below_the_root() -> None:
    cfg = OmegaConf.create(
        {"model": {"module": {"_target_": "ctvoco.classify.InjuryClassifier", **TINY_MODEL}}}
    )
    error = _built_error(cfg.model, "module", task="organs")
    assert error.argument == "model.module.task"
    assert str(error).startswith("model.module.task must be one of all, rest_organs, bowel")


# -- every library argument error, as the command line words it ------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "organs"}, "model.module.task must be one of all, rest_organs, bowel"),
        ({"sequence": "rnn"}, "model.module.sequence must be one of lstm, gru; got 'rnn'"),
        (
            {"slice_pooling": "sum"},
            "model.module.slice_pooling must be one of max, mean, attention; got 'sum'",
        ),
        (
            {"loss_reduction": "meen"},
            "model.module.loss_reduction must be one of metric, mean, weighted_mean; got 'meen'",
        ),
        ({"init": "voco"}, "model.module.init must be random, imagenet or voco:<path>; got 'voco'"),
        ({"tta_flips": []}, "model.module.tta_flips must be a non-empty list of flips"),
        (
            {"image_loss_weight": -1.0},
            "model.module.image_loss_weight must be 0 (off) or positive; got -1.0",
        ),
    ],
)
def test_classifier_errors_name_the_model_module_key(options: dict[str, Any], message: str) -> None:
    cfg = OmegaConf.create(
        {
            "model": {
                "module": {"_target_": "ctvoco.classify.InjuryClassifier", **TINY_MODEL, **options}
            }
        }
    )
    with pytest.raises(Exception) as caught:
        instantiate(cfg.model.module)
    assert (user_error_message(caught.value) or "").startswith(message)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"purpose": "finetune"}, "data.purpose must be one of classify, pretrain; got 'finetune'"),
        ({"fold": 5}, "data.fold must be in 0..4 (or null); got 5"),
        ({"fold": None, "n_folds": 1}, "data.n_folds must be at least 2; got 1"),
        ({"exclude_folds": [0, 7]}, "data.exclude_folds must be in 0..4; got [7]"),
        ({"train_fraction": 0.0}, "data.train_fraction must be in (0, 1]; got 0.0"),
        ({"val_fraction": 1.0}, "data.val_fraction must be in [0, 1); got 1.0"),
        ({"batch_size": 0}, "data.batch_size must be at least 1; got 0"),
        ({"split": "val"}, "data.split must be one of train, test; got 'val'"),
    ],
)
def test_data_module_errors_name_the_data_key(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    cfg = _data_config(tmp_path, **options)
    with pytest.raises(UserError) as caught:
        build(cfg, "data", views=None, val_views=None)
    assert user_error_message(caught.value) == message


def test_an_empty_concat_data_set_names_data_members() -> None:
    cfg = OmegaConf.create({"data": {"_target_": "ctvoco.data.ConcatDataModule", "members": {}}})
    with pytest.raises(UserError) as caught:
        build(cfg, "data", views=None, val_views=None)
    assert user_error_message(caught.value) == "data.members is empty: name at least one data set"


LIBRARY_FILES = (
    "classify/module.py",
    "classify/tta.py",
    "classify/net.py",
    "classify/losses.py",
    "data/folds.py",
    "data/datamodules.py",
    "data/rsna.py",
    "data/loading.py",
)
"""Library modules whose argument errors once spelled out the config key themselves."""

_CONFIG_KEY_REFUSAL = re.compile(r"^(model|data)\.[\w.]+ (must|is empty)")


@pytest.mark.parametrize("relative", LIBRARY_FILES)
def test_library_refusals_do_not_spell_out_config_keys(relative: str) -> None:
    source = Path(ctvoco.__file__).parent / relative
    tree = ast.parse(source.read_text(encoding="utf-8"))
    texts = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert not [text for text in texts if _CONFIG_KEY_REFUSAL.match(text)]
