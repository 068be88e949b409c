"""The optimiser and LR schedule come as partials, built by one shared implementation."""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
from hydra import compose, initialize_config_module

import ctvoco.classify.module as classify_module
import ctvoco.voco.module as voco_module
from ctvoco.classify import InjuryClassifier
from ctvoco.errors import UserError
from ctvoco.training.schedules import CyclicCosine, WarmupCosine
from ctvoco.voco import VoCoPretrainer, VoCoViews

VOCO = {"backbone": "test_efficientnet", "head_hidden": 16, "head_out": 8}
CLASSIFIER = {"backbone": "test_efficientnet", "hidden": 8}
TINY_VIEWS = VoCoViews(grid=2, crop_size=32, num_random=2, num_slices=2, depth=4)


def voco(**kwargs) -> VoCoPretrainer:
    return VoCoPretrainer(**VOCO, views=TINY_VIEWS, **kwargs)


def composed(top: str, *overrides: str):
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        return compose(config_name=top, overrides=[*overrides, "paths.output_dir=/tmp/x"])


@pytest.mark.parametrize(
    ("top", "model", "schedule"),
    [
        ("pretrain", "voco", "WarmupCosine"),
        ("pretrain", "voco_research", "WarmupCosine"),
        ("pretrain", "voco_research_v1", "WarmupCosine"),
        ("finetune", "classifier", "WarmupCosine"),
    ],
)
def test_model_configs_give_the_optimiser_and_schedule_as_partials(top, model, schedule) -> None:
    module = composed(top, f"model={model}").model.module
    assert module.optimizer._target_ == "torch.optim.AdamW"
    assert module.optimizer._partial_ is True
    assert {"lr", "weight_decay", "amsgrad"} <= set(module.optimizer)
    assert module.scheduler._target_ == f"ctvoco.training.schedules.{schedule}"
    assert module.scheduler._partial_ is True
    assert {"warmup_steps", "min_lr_ratio"} <= set(module.scheduler)
    assert not {"lr", "weight_decay", "amsgrad", "warmup_steps", "min_lr_ratio"} & set(module)


def test_the_cyclic_experiment_switches_the_schedule_class() -> None:
    scheduler = composed("finetune", "+experiment=rsna_voco").model.module.scheduler
    assert scheduler._target_ == "ctvoco.training.schedules.CyclicCosine"
    assert (scheduler.half_period, scheduler.min_lr_ratio, scheduler.warmup_steps) == (5000, 0.1, 0)


@pytest.mark.parametrize("source", [voco_module, classify_module])
def test_no_module_builds_its_own_optimiser(source) -> None:
    text = inspect.getsource(source)
    assert "torch.optim.AdamW(" not in text and "LambdaLR" not in text


@pytest.mark.parametrize("module", [VoCoPretrainer, InjuryClassifier])
def test_both_modules_call_the_shared_configure_optimizers(module) -> None:
    body = inspect.getsource(module.configure_optimizers).strip().splitlines()[1:]
    assert [line.strip() for line in body] == ["return self.optimization.configure(self)"]


def test_no_optimiser_given_is_adamw_with_the_defaults() -> None:
    optimizer = voco(optimizer=None).configure_optimizers()["optimizer"]
    assert type(optimizer) is torch.optim.AdamW
    group = optimizer.param_groups[0]
    assert (group["initial_lr"], group["weight_decay"], group["amsgrad"]) == (1e-4, 0.01, True)
    optimizer = InjuryClassifier(**CLASSIFIER).configure_optimizers()["optimizer"]
    group = optimizer.param_groups[0]
    assert (group["initial_lr"], group["weight_decay"], group["amsgrad"]) == (1.25e-4, 1e-5, False)


def test_the_module_calls_the_partials_it_is_given() -> None:
    module = voco(
        optimizer=functools.partial(torch.optim.SGD, lr=0.5),
        scheduler=functools.partial(CyclicCosine, half_period=4, min_lr_ratio=0.5),
    )
    built = module.configure_optimizers()
    assert type(built["optimizer"]) is torch.optim.SGD
    assert isinstance(built["lr_scheduler"]["scheduler"].lr_lambdas[0], CyclicCosine)
    assert built["lr_scheduler"]["interval"] == "step"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"optimizer": functools.partial(torch.optim.AdamW, lr=0)}, "optimizer.lr=0"),
        (
            {"optimizer": functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=-1)},
            "optimizer.weight_decay=-1",
        ),
        (
            {"scheduler": functools.partial(WarmupCosine, warmup_steps=-1)},
            "scheduler.warmup_steps=-1",
        ),
        (
            {"scheduler": functools.partial(WarmupCosine, warmup_steps=0, min_lr_ratio=2)},
            "scheduler.min_lr_ratio=2",
        ),
        (
            {"scheduler": functools.partial(CyclicCosine, half_period=0)},
            "scheduler.half_period=0",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(kwargs, key) -> None:
    with pytest.raises(UserError) as info:
        voco(**kwargs)
    assert str(info.value).startswith(key), str(info.value)
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        InjuryClassifier(**CLASSIFIER, **kwargs)


def test_hyper_parameters_record_the_partials_as_plain_mappings(tmp_path) -> None:
    module = InjuryClassifier(
        **CLASSIFIER,
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-4, weight_decay=0.0),
        scheduler=functools.partial(CyclicCosine, half_period=7, min_lr_ratio=0.2),
    )
    assert module.hparams.optimizer == {
        "_target_": "torch.optim.adamw.AdamW",
        "_partial_": True,
        "lr": 3e-4,
        "weight_decay": 0.0,
    }
    path = tmp_path / "model.pt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    raw = torch.load(path, weights_only=True)
    rebuilt = InjuryClassifier(**raw["hyper_parameters"])
    group = rebuilt.configure_optimizers()["optimizer"].param_groups[0]
    assert (group["initial_lr"], group["weight_decay"]) == (3e-4, 0.0)
    assert rebuilt.hparams.scheduler == module.hparams.scheduler


class ScaledSGD(torch.optim.SGD):
    """An optimiser of the user's own, outside torch.optim."""


def not_an_optimizer(params, lr: float = 0.1) -> dict:
    return {"params": list(params), "lr": lr}


def test_an_optimiser_from_another_module_is_accepted_and_recorded() -> None:
    target = f"{__name__}.ScaledSGD"
    module = InjuryClassifier(**CLASSIFIER, optimizer={"_target_": target, "lr": 0.05})
    assert type(module.configure_optimizers()["optimizer"]) is ScaledSGD
    assert module.hparams.optimizer == {"_target_": target, "_partial_": True, "lr": 0.05}
    rebuilt = InjuryClassifier(**CLASSIFIER, optimizer=dict(module.hparams.optimizer))
    assert type(rebuilt.configure_optimizers()["optimizer"]) is ScaledSGD


@pytest.mark.parametrize(
    ("optimizer", "built"),
    [
        ({"_target_": "collections.OrderedDict", "_partial_": True}, "collections.OrderedDict"),
        (functools.partial(not_an_optimizer, lr=0.1), "dict"),
    ],
)
def test_an_optimiser_partial_must_build_a_torch_optimizer(optimizer, built) -> None:
    with pytest.raises(UserError) as info:
        voco(optimizer=optimizer)
    message = str(info.value)
    assert message.startswith("optimizer"), message
    assert built in message and "torch.optim.Optimizer" in message


def test_a_torch_lr_scheduler_class_is_refused_with_what_the_scheduler_must_be() -> None:
    spec = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 10}
    with pytest.raises(UserError, match=r"^scheduler.*StepLR.*per-step LR factor"):
        voco(scheduler=spec)


def test_an_unimportable_optimiser_names_the_path() -> None:
    with pytest.raises(
        UserError,
        match=r"optimizer\._target_='torch\.optim\.AdamWW'.*did you mean 'torch\.optim\.AdamW'",
    ):
        voco(optimizer={"_target_": "torch.optim.AdamWW"})
