"""Tests of :class:`ctvoco.classify.module.InjuryClassifier` with a tiny timm model on CPU."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import timm
import torch
from torch.utils.data import DataLoader, Dataset

from ctvoco.classify.losses import probabilities
from ctvoco.classify.module import (
    InjuryClassifier,
    task_score,
)
from ctvoco.classify.spec import InferenceSpec
from ctvoco.classify.tta import TTA_FLIPS
from ctvoco.classify.views import SliceStackViews
from ctvoco.errors import DataError, UserError
from ctvoco.labels import PREDICTION_COLUMNS, TARGETS, aggregate_predictions, labels_from_classes
from ctvoco.metrics import rsna_score, score_predictions
from ctvoco.models.backbone import create_backbone
from ctvoco.models.freezing import freeze_backbone_stages
from ctvoco.preprocessing.pipeline import PreprocessConfig
from tests.training.module_args import build

S, SIZE = 3, 32
"""Slices per stack and slice side of the in-memory batches."""

TINY = {"backbone": "test_efficientnet", "hidden": 8}


class DictBatches(Dataset):
    """In-memory samples shaped like :class:`~ctvoco.data.dataset.CachedVolumeDataset`'s."""

    def __init__(
        self,
        patient_ids: list[int],
        series_ids: list[int],
        classes: np.ndarray,
        seed: int = 0,
        images: torch.Tensor | None = None,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = (
            images
            if images is not None
            else torch.randint(0, 256, (len(series_ids), S, 1, SIZE, SIZE), generator=g).to(
                torch.uint8
            )
        )
        self.patient_ids = [str(p) for p in patient_ids]
        self.series_ids = [str(s) for s in series_ids]
        self.labels = torch.as_tensor(np.asarray(classes), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.series_ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "labels": self.labels[i],
            "patient_id": self.patient_ids[i],
            "series_id": self.series_ids[i],
            "key": f"{self.patient_ids[i]}_{self.series_ids[i]}",
        }

    def subset(self, order: list[int]) -> DictBatches:
        return DictBatches(
            [int(self.patient_ids[i]) for i in order],
            [int(self.series_ids[i]) for i in order],
            self.labels[order].numpy(),
            images=self.images[order],
        )


def _classes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = np.stack([rng.integers(0, k, size=n) for k in (2, 2, 3, 3, 3)], axis=1)
    classes[: n // 2, TARGETS.index("extravasation")] = 1  # both classes present
    classes[n // 2 :, TARGETS.index("extravasation")] = 0
    return classes


def _train_set(n: int = 6, seed: int = 0) -> DictBatches:
    return DictBatches(list(range(1, n + 1)), list(range(101, 101 + n)), _classes(n, seed), seed)


def _trainer(**kwargs) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    options.update(kwargs)
    return pl.Trainer(**options)


def _module(**kwargs) -> InjuryClassifier:
    torch.manual_seed(kwargs.pop("seed", 0))
    return build(InjuryClassifier, **{**TINY, **kwargs})


def _snapshot(module: InjuryClassifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- training
def test_training_step_gives_a_finite_loss():
    module = _module(lr=1e-3)
    trainer = _trainer(max_steps=2, log_every_n_steps=1)
    trainer.fit(module, train_dataloaders=DataLoader(_train_set(), batch_size=2))
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)
    for t in TARGETS:
        assert torch.isfinite(trainer.callback_metrics[f"train/loss_{t}"])
    assert trainer.global_step == 2
    assert module.guard.count == 0


def _changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


@pytest.mark.parametrize(
    ("task", "trained"),
    [
        ("rest_organs", {"bowel", "kidney", "liver", "spleen"}),
        ("all", set(TARGETS)),
        ("extravasation", {"extravasation"}),
    ],
)
def test_only_the_heads_of_the_task_are_updated(task, trained):
    module = _module(task=task, lr=1e-2, weight_decay=1e-2)
    before = _snapshot(module)
    _trainer(max_steps=3).fit(module, train_dataloaders=DataLoader(_train_set(), batch_size=2))
    after = _snapshot(module)
    for t in TARGETS:
        assert _changed(before, after, f"net.heads.{t}.") == (t in trained), t
    assert _changed(before, after, "net.sequence.")
    assert _changed(before, after, "net.encoder.backbone.conv_stem.")


# --------------------------------------------------------------------------- initialisation
def _saved_timm(tmp_path: Path, name: str, seed: int) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    reference = timm.create_model(name, pretrained=False, in_chans=1)  # with its classifier
    path = tmp_path / f"{name}.pt"
    torch.save(reference.state_dict(), path)
    return path, reference.state_dict()


def test_voco_init_loads_the_backbone_strictly(tmp_path):
    path, reference = _saved_timm(tmp_path, "test_efficientnet", seed=123)
    random = _module(seed=0).net.encoder.backbone.state_dict()
    loaded = _module(init=f"voco:{path}", seed=0).net.encoder.backbone.state_dict()
    assert set(loaded) <= set(reference)
    assert set(reference) - set(loaded) <= {"classifier.weight", "classifier.bias"}
    for key, value in loaded.items():
        assert torch.equal(value, reference[key]), key
    assert any(not torch.equal(random[k], loaded[k]) for k in loaded)


def test_voco_init_from_a_classifier_checkpoint(tmp_path):
    source = _module(seed=5)
    path = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    target = _module(init=f"voco:{path}", seed=0)
    for key, value in target.net.encoder.backbone.state_dict().items():
        assert torch.equal(value, source.net.encoder.backbone.state_dict()[key]), key


def test_voco_init_with_another_backbone_raises_data_error(tmp_path):
    path, _ = _saved_timm(tmp_path, "test_resnet", seed=0)
    with pytest.raises(DataError, match="does not cover the backbone"):
        _module(init=f"voco:{path}")


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_voco_init_with_a_corrupt_file_raises_data_error(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"broken\.pt"):
        _module(init=f"voco:{path}")


def test_voco_init_with_a_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        _module(init=f"voco:{tmp_path / 'absent.pt'}")


def test_imagenet_init_without_local_weights_raises_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CTVOCO_WEIGHTS_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UserError, match="not available offline"):
        _module(init="imagenet")
    with pytest.raises(UserError, match="not available offline"):
        _module(init="imagenet", weights_dir=str(tmp_path))


def test_imagenet_init_from_local_weights(tmp_path):
    torch.manual_seed(3)
    reference = timm.create_model("test_efficientnet", pretrained=False)  # 3 input channels
    torch.save(reference.state_dict(), tmp_path / "test_efficientnet.pth")
    state = _module(init="imagenet", weights_dir=str(tmp_path)).net.encoder.backbone.state_dict()
    expected = reference.state_dict()
    for key, value in state.items():
        if key == "conv_stem.weight":  # timm folds RGB into one channel by summing
            assert value.shape[1] == 1
            assert torch.allclose(value, expected[key].sum(1, keepdim=True))
        else:
            assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize("init", ["bogus", "voco", "voco:", "random:/tmp/x.pt", "imagenet:x", ""])
def test_unknown_init_raises_user_error(init):
    with pytest.raises(UserError, match=r"^init must be random, imagenet or voco:<path>"):
        _module(init=init)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "organs"}, r"^task must be one of"),
        ({"sequence": "rnn"}, r"^sequence must be one of lstm, gru"),
        ({"slice_pooling": "sum"}, r"^slice_pooling must be one of max, mean"),
        ({"backbone": "no_such_timm_model_xyz"}, "unknown timm backbone"),
    ],
)
def test_invalid_options_raise_user_error(kwargs, match):
    with pytest.raises(UserError, match=match):
        _module(**kwargs)


# --------------------------------------------------------------------------- freezing
def test_freeze_stages_freezes_the_stem_and_first_stage():
    module = _module(freeze_stages=1)
    backbone = module.net.encoder.backbone
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    # test_efficientnet: stem = conv_stem + bn1; feature stage 1 = blocks.0
    assert {"conv_stem.weight", "bn1.weight", "bn1.bias"} <= frozen
    assert all(n.startswith(("conv_stem.", "bn1.", "blocks.0.")) for n in frozen)
    later = [p for n, p in backbone.named_parameters() if n.startswith(("blocks.1.", "blocks.2."))]
    assert later
    assert all(p.requires_grad for p in later)
    assert all(p.requires_grad for p in module.net.sequence.parameters())
    assert all(p.requires_grad for p in module.net.heads.parameters())


def test_frozen_parameters_stay_fixed_in_training():
    module = _module(freeze_stages=1, lr=1e-2)
    before = _snapshot(module)
    _trainer(max_steps=2).fit(module, train_dataloaders=DataLoader(_train_set(), batch_size=2))
    after = _snapshot(module)
    assert not _changed(before, after, "net.encoder.backbone.conv_stem.")
    assert not _changed(before, after, "net.encoder.backbone.blocks.0.0.conv.")
    assert _changed(before, after, "net.encoder.backbone.blocks.1.")
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) not in in_optimizer for p in module.parameters() if not p.requires_grad)


def _bn_state(module: InjuryClassifier, prefix: str) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in module.state_dict().items()
        if k.startswith(prefix)
        and k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


def test_frozen_stages_keep_their_batchnorm_statistics():
    module = _module(freeze_stages=1, lr=1e-2)
    frozen = "net.encoder.backbone.bn1."
    frozen_block = "net.encoder.backbone.blocks.0."
    trained = "net.encoder.backbone.blocks.1."
    before = {p: _bn_state(module, p) for p in (frozen, frozen_block, trained)}
    assert all(before.values())
    _trainer(max_steps=2, limit_val_batches=1).fit(
        module,
        train_dataloaders=DataLoader(_train_set(), batch_size=2),
        val_dataloaders=DataLoader(_val_set(), batch_size=2),
    )
    for prefix in (frozen, frozen_block):
        for key, value in _bn_state(module, prefix).items():
            assert torch.equal(value, before[prefix][key]), key
    assert any(
        not torch.equal(v, before[trained][k]) for k, v in _bn_state(module, trained).items()
    )


def test_train_mode_leaves_frozen_stages_in_eval_mode():
    module = _module(freeze_stages=1)
    modes = dict(module.train().named_modules())
    backbone = "net.encoder.backbone."
    assert not modes[f"{backbone}bn1"].training
    assert not modes[f"{backbone}blocks.0.0.bn1"].training
    assert not modes[f"{backbone}conv_stem"].training
    assert modes[f"{backbone}blocks.1.0.bn1"].training
    assert modes["net.sequence"].training and modes["net.encoder"].training
    module.eval()
    assert not any(m.training for m in module.modules())
    module.train()
    assert not modes[f"{backbone}bn1"].training
    assert all(m.training for m in _module().train().modules())


def test_freeze_more_stages_freezes_more():
    counts = [freeze_backbone_stages(create_backbone("test_efficientnet"), k) for k in (1, 2, 3)]
    assert counts[0] < counts[1] < counts[2]


def test_freeze_stages_one_freezes_the_resnet_stem():
    backbone = create_backbone("test_resnet")
    freeze_backbone_stages(backbone, 1)
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert "conv1.0.weight" in frozen
    assert not any(n.startswith("layer1.") for n in frozen)


def test_freeze_without_feature_info_raises_user_error():
    with pytest.raises(UserError, match="feature_info"):
        freeze_backbone_stages(torch.nn.Linear(2, 2), 1)


# --------------------------------------------------------------------------- channels last
def _encoder_input_layouts(module: InjuryClassifier, x: torch.Tensor) -> list[bool]:
    """Whether each batch the encoder saw was channels-last (C > 1, so it tells)."""
    seen: list[bool] = []

    def record(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        (slices,) = args
        assert slices.ndim == 4
        seen.append(slices.is_contiguous(memory_format=torch.channels_last))

    handle = module.net.encoder.register_forward_pre_hook(record)
    try:
        with torch.no_grad():
            module.predict_proba(x, tta=False)
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_reaches_the_encoder(channels_last):
    module = _module(in_chans=2, channels_last=channels_last).eval()
    x = torch.randint(0, 256, (2, S, 2, SIZE, SIZE), dtype=torch.uint8)
    assert _encoder_input_layouts(module, x) == [channels_last]
    stem = module.net.encoder.backbone.conv_stem.weight
    assert stem.is_contiguous(memory_format=torch.channels_last) == channels_last
    reference = _module(in_chans=2).eval()
    with torch.no_grad():
        for t, logits in module(x).items():
            assert torch.allclose(logits, reference(x)[t], atol=1e-5), t


def test_a_float_input_is_not_modified():
    x = _images().float()
    copy = x.clone()
    with torch.no_grad():
        _module().eval()(x)
    assert torch.equal(x, copy)


# --------------------------------------------------------------------------- TTA
def _images(b: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, S, 1, SIZE, SIZE), generator=g).to(torch.uint8)


def test_tta_is_the_mean_over_the_four_flips():
    module = _module().eval()
    x = _images()
    with torch.no_grad():
        got = module.predict_proba(x, tta=True)
        flips = [probabilities(module(x.flip(dims) if dims else x)) for dims in TTA_FLIPS]
        plain = module.predict_proba(x, tta=False)
    assert TTA_FLIPS == ((), (-1,), (-2,), (-2, -1))
    expected = torch.stack(flips).mean(0)
    assert got.shape == (2, 13)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(plain, flips[0], atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-6), "flips should change a random model"


def test_tta_default_follows_the_hyperparameter():
    x = _images()
    with torch.no_grad():
        on = _module(tta=True).eval()
        off = _module(tta=False).eval()
        assert torch.allclose(on.predict_proba(x), on.predict_proba(x, tta=True))
        assert torch.allclose(off.predict_proba(x), off.predict_proba(x, tta=False))


def test_forward_scales_uint8_to_unit_range():
    module = _module().eval()
    x = _images()
    with torch.no_grad():
        from_uint8 = module(x)
        from_float = module.net(x.float() / 255.0)
    for t in TARGETS:
        assert torch.allclose(from_uint8[t], from_float[t], atol=1e-6)


# --------------------------------------------------------------------------- validation
VAL_PATIENTS = [7, 7, 9, 12, 15]
VAL_SERIES = [70, 71, 90, 120, 150]
VAL_CLASSES = np.array(
    [
        [1, 0, 2, 0, 1],  # patient 7, series 70
        [1, 0, 2, 0, 1],  # patient 7, series 71 (same patient labels)
        [0, 1, 0, 1, 0],
        [0, 0, 0, 0, 0],
        [1, 1, 1, 2, 2],
    ]
)


def _val_set() -> DictBatches:
    return DictBatches(VAL_PATIENTS, VAL_SERIES, VAL_CLASSES, seed=3)


def _val_labels() -> pd.DataFrame:
    return labels_from_classes([7, 9, 12, 15], VAL_CLASSES[[0, 2, 3, 4]])


def _by_hand(module: InjuryClassifier, data: DictBatches) -> pd.DataFrame:
    module.eval()
    rows = []
    with torch.no_grad():
        for i in range(len(data)):
            sample = data[i]
            probs = module.predict_proba(sample["image"][None]).squeeze(0).numpy()
            rows.append([int(sample["patient_id"]), int(sample["series_id"]), *probs])
    return pd.DataFrame(rows, columns=["patient_id", "series_id", *PREDICTION_COLUMNS])


@pytest.fixture(scope="module")
def validated() -> tuple[InjuryClassifier, dict[str, float]]:
    module = _module(seed=4)
    trainer = _trainer()
    trainer.validate(module, dataloaders=DataLoader(_val_set(), batch_size=2))
    return module, {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_validation_score_equals_rsna_score_of_max_aggregated_series(validated):
    module, logged = validated
    predictions = module.last_predictions
    assert predictions is not None
    assert list(predictions.columns) == ["patient_id", "series_id", *PREDICTION_COLUMNS]
    assert predictions[["patient_id", "series_id"]].values.tolist() == [
        list(p) for p in zip(VAL_PATIENTS, VAL_SERIES, strict=True)
    ]
    hand = _by_hand(module, _val_set())
    np.testing.assert_allclose(
        predictions[list(PREDICTION_COLUMNS)].to_numpy(),
        hand[list(PREDICTION_COLUMNS)].to_numpy(),
        atol=1e-5,
    )
    # aggregate the two series of patient 7 by column-wise max, by hand
    per_patient = hand.drop(columns="series_id").groupby("patient_id").max().reset_index()
    assert len(per_patient) == 4
    expected = rsna_score(_val_labels(), per_patient)
    assert logged["val/score"] == pytest.approx(expected["score"], abs=1e-5)
    for name in ("bowel", "extravasation", "kidney", "liver", "spleen", "any_injury"):
        assert logged[f"val/{name}"] == pytest.approx(expected[name], abs=1e-5)
    assert module.last_metrics["score"] == pytest.approx(expected["score"], abs=1e-9)
    assert module.last_metrics == score_predictions(_val_labels(), predictions)
    # max aggregation, not mean: the result differs from the mean-aggregated score
    mean = rsna_score(_val_labels(), aggregate_predictions(hand, "mean"))["score"]
    assert not math.isclose(mean, expected["score"], abs_tol=1e-9)
    assert "val/loss" in logged


def test_validation_drops_sampler_padding_duplicates(validated):
    module, logged = validated
    padded = _val_set().subset([0, 1, 2, 3, 4, 0, 1])  # a sampler padding with the first items
    trainer = _trainer()
    trainer.validate(module, dataloaders=DataLoader(padded, batch_size=3))
    assert trainer.callback_metrics["val/score"].item() == pytest.approx(
        logged["val/score"], abs=1e-6
    )
    assert len(module.last_predictions) == len(VAL_SERIES)


def test_validation_is_independent_of_batching_and_order(validated):
    module, logged = validated
    shuffled = _val_set().subset([3, 1, 4, 0, 2])
    trainer = _trainer()
    trainer.validate(module, dataloaders=DataLoader(shuffled, batch_size=1))
    assert trainer.callback_metrics["val/score"].item() == pytest.approx(
        logged["val/score"], abs=1e-6
    )


def test_task_score_is_the_competition_score_for_all(validated):
    module, logged = validated
    assert logged["val/task_score"] == logged["val/score"]
    assert task_score(module.last_metrics, "all") == module.last_metrics["score"]


LOSSES = {
    "bowel": 0.1,
    "extravasation": 0.9,
    "kidney": 0.2,
    "liver": 0.3,
    "spleen": 0.4,
    "any_injury": 0.8,
    "score": 0.45,
}


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("all", 0.45),
        ("rest_organs", (0.1 + 0.2 + 0.3 + 0.4) / 4),
        ("extravasation", 0.9),
        ("kidney", 0.2),
    ],
)
def test_task_score_averages_the_trained_targets(task, expected):
    assert task_score(LOSSES, task) == pytest.approx(expected, abs=1e-15)


def test_validation_logs_the_task_score_of_rest_organs():
    module = _module(seed=4, task="rest_organs")
    trainer = _trainer()
    trainer.validate(module, dataloaders=DataLoader(_val_set(), batch_size=5))
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    organs = [logged[f"val/{t}"] for t in ("bowel", "kidney", "liver", "spleen")]
    assert logged["val/task_score"] == pytest.approx(float(np.mean(organs)), abs=1e-6)
    assert logged["val/task_score"] != pytest.approx(logged["val/score"], abs=1e-6)


def test_finetune_checkpoints_select_on_the_task_score():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        for overrides in ([], ["+experiment=rsna"], ["model.module.task=rest_organs"]):
            cfg = compose(config_name="finetune", overrides=overrides)
            assert cfg.callbacks.model_checkpoint.monitor == "val/task_score", overrides
            assert cfg.callbacks.model_checkpoint.mode == "min"


def test_non_integer_ids_raise_user_error():
    data = _val_set()
    data.patient_ids = ["a", "b", "c", "d", "e"]
    module = _module()
    with pytest.raises(UserError, match="integer patient and series ids"):
        _trainer().validate(module, dataloaders=DataLoader(data, batch_size=5))


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_keeps_weights_and_hparams(tmp_path, caplog):
    spec = InferenceSpec(PreprocessConfig(), SliceStackViews.plain(crop=SIZE), (0.5,) * 13)
    module = _module(lr=1e-3, inference=spec)
    trainer = _trainer(max_steps=1)
    trainer.fit(module, train_dataloaders=DataLoader(_train_set(), batch_size=2))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    with caplog.at_level(logging.WARNING):
        loaded = InjuryClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert loaded.inference == spec
    assert loaded.inference.prevalence == (0.5,) * 13
    assert loaded.inference.views.crop == SIZE
    for key, value in module.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = _images()
    with torch.no_grad():
        assert torch.allclose(module.eval().predict_proba(x), loaded.eval().predict_proba(x))
