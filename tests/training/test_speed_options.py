"""Speed options of both LightningModules and of the data modules, on CPU.

- ``channels_last``: same outputs as the default layout; encoder weights (and inputs) in
  channels-last memory format, also after optimiser and EMA steps.
- ``compile``: ``torch.compile`` of the inner encoder only; same loss and gradients as eager,
  same ``state_dict`` keys (no ``_orig_mod.``). A cold compile takes about a minute per module
  on 2 CPU cores (warm inductor cache: a few seconds), hence ``slow``.
- ``accumulate_grad_batches``: fewer optimiser steps; the VoCo teacher moves only on them.
- DataLoader options of :class:`~ctvoco.data.RSNADataModule` (workers, persistence, prefetch).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import ctvoco.voco.module as voco_module_source
from ctvoco.voco.module import VoCoPretrainer
from tests.conftest import TINY_SHAPE
from tests.data.conftest import rsna_module
from tests.training.test_precision import (
    KINDS,
    LossRecorder,
    batches,
    encoder,
    make,
    parameters,
    trainer,
)


def encoders(module: pl.LightningModule) -> dict[str, nn.Module]:
    """Every encoder the ``channels_last`` option converts."""
    if isinstance(module, VoCoPretrainer):
        return {"student": module.student_encoder, "teacher": module.teacher_encoder}
    return {"encoder": module.net.encoder}


def conv_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p for k, p in module.named_parameters() if p.ndim == 4}


def is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last)


def outputs(module: pl.LightningModule, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Evaluation-mode outputs of either module for one batch.

    For VoCo these are the crop features of both encoders: the projection head's batch
    normalisation divides by per-feature spreads that can be tiny on a two-volume batch,
    which would magnify float rounding differences beyond any sensible tolerance.
    """
    module.eval()
    with torch.no_grad():
        if isinstance(module, VoCoPretrainer):
            crops = torch.cat([batch["random"], batch["base"]], dim=1)
            return {
                "student": module.crop_features(crops),
                "teacher": module.crop_features(crops, teacher=True),
            }
        return module(batch["image"])


def twin(kind: str, **options: Any) -> tuple[pl.LightningModule, pl.LightningModule]:
    """A default module and one with ``options``, with identical weights."""
    reference = make(kind, dropout=0.0)
    other = make(kind, dropout=0.0, **options)
    other.load_state_dict(reference.state_dict())
    return reference, other


# ------------------------------------------------------------------------ channels_last
@pytest.mark.parametrize("kind", KINDS)
def test_channels_last_gives_the_same_outputs(kind: str) -> None:
    reference, fast = twin(kind, channels_last=True)
    inputs: list[torch.Tensor] = []
    fast_encoder = encoder(fast)
    handle = fast_encoder.backbone.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    batch = next(iter(batches(kind, count=2)))
    expected, actual = outputs(reference, batch), outputs(fast, batch)
    handle.remove()

    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-5)
    assert inputs, "the backbone ran"
    assert all(x.ndim == 4 and is_channels_last(x) for x in inputs), "inputs are channels-last"


@pytest.mark.parametrize("kind", KINDS)
def test_channels_last_encoder_weights_stay_channels_last_in_training(kind: str) -> None:
    module = make(kind, channels_last=True)
    before = parameters(module)
    for name, net in encoders(module).items():
        weights = conv_weights(net)
        assert weights, name
        assert all(is_channels_last(w) for w in weights.values()), name
        spatial = [k for k, w in weights.items() if w.shape[1] > 1 and w.shape[-1] > 1]
        assert spatial, "the backbone has dense k x k convolutions"
        assert not any(weights[k].is_contiguous() for k in spatial), "really converted"

    trainer(max_steps=2).fit(module, batches(kind, count=4))

    after = parameters(module)
    assert any(not torch.equal(before[k], after[k]) for k in before), "training moved weights"
    for name, net in encoders(module).items():
        bad = [k for k, w in conv_weights(net).items() if not is_channels_last(w)]
        assert not bad, f"{name}: optimiser/EMA steps changed the layout of {bad[:3]}"


# ------------------------------------------------------------------------ torch.compile
@pytest.mark.parametrize("kind", KINDS)
def test_compile_wraps_the_encoder_and_keeps_state_dict_keys(kind: str, tmp_path: Path) -> None:
    eager, compiled = twin(kind, compile=True)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in k for k in compiled.state_dict())
    views = compiled._compiled
    assert views, "compile=True makes compiled views"
    for name, view in views.items():
        assert view._orig_mod is encoders(compiled)[name], "compiled view of the module's encoder"
        assert not any(view is m for m in compiled.modules()), (
            "not registered: no duplicate weights"
        )
    # A compiled module's weights load strictly into an eager one.
    path = tmp_path / "compiled.pt"
    torch.save(compiled.state_dict(), path)
    make(kind, dropout=0.0).load_state_dict(torch.load(path, weights_only=True), strict=True)


class GradRecorder(pl.Callback):
    """Gradients just before the optimiser step."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {
            k: p.grad.detach().clone()
            for k, p in pl_module.named_parameters()
            if p.grad is not None
        }


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """``||a - b|| / ||a||`` over all tensors together (single near-zero entries don't count)."""
    flat_a = torch.cat([a[k].flatten() for k in a])
    flat_b = torch.cat([b[k].flatten() for k in a])
    return float((flat_a - flat_b).norm() / flat_a.norm())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "compare_gradients"),
    [
        # The VoCo loss at a random init is chaotic: log(1 - |y - p| + 1e-6) with y ~ 1 and a
        # clamped similarity p ~ 0 has gradients ~1/p, so a 1e-8 change of the embeddings
        # already moves the total gradient by tens of percent, in eager mode too. Only its
        # loss is compared; the classifier's gradients are compared as well.
        ("voco", False),
        ("classifier", True),
    ],
)
def test_compiled_training_step_matches_eager(kind: str, compare_gradients: bool, record_property):
    eager, compiled = twin(kind, compile=True)
    results = {}
    for name, module in (("eager", eager), ("compiled", compiled)):
        losses, grads = LossRecorder(), GradRecorder()
        start = time.perf_counter()
        trainer(max_steps=1, callbacks=[losses, grads]).fit(module, batches(kind, count=2))
        results[name] = (float(losses.losses[0]), grads.grads, time.perf_counter() - start)
    seconds = {name: round(result[2], 1) for name, result in results.items()}
    record_property("step_seconds", seconds)
    print(f"{kind}: first training step {seconds} (compiled includes compilation)")

    (loss, grads, _), (eager_loss, eager_grads, _) = results["compiled"], results["eager"]
    assert math.isfinite(loss)
    assert loss == pytest.approx(eager_loss, rel=1e-4, abs=1e-6)
    assert grads.keys() == eager_grads.keys(), "the same parameters get gradients"
    if compare_gradients:
        assert relative_difference(eager_grads, grads) < 1e-3
    assert list(compiled.state_dict()) == list(eager.state_dict())


# ------------------------------------------------------------------------ accumulation
class OptimizerSteps(pl.Callback):
    def __init__(self) -> None:
        self.count = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.count += 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("accumulate", "steps"), [(1, 4), (2, 2), (4, 1)])
def test_accumulation_divides_the_optimizer_steps(kind: str, accumulate: int, steps: int) -> None:
    module = make(kind)
    counter = OptimizerSteps()
    run = trainer(
        max_steps=-1,
        max_epochs=1,
        limit_train_batches=4,
        accumulate_grad_batches=accumulate,
        callbacks=[counter],
    )
    run.fit(module, batches(kind, count=4, batch_size=1))
    assert run.global_step == steps
    assert counter.count == steps


@pytest.mark.parametrize(("teacher_head", "per_step"), [("ema", 2), ("trained", 1)])
@pytest.mark.parametrize(("accumulate", "steps"), [(1, 4), (2, 2)])
def test_voco_teacher_moves_only_on_optimizer_steps(
    monkeypatch, teacher_head: str, per_step: int, accumulate: int, steps: int
) -> None:
    calls: list[tuple[int, float]] = []
    update = voco_module_source.update_momentum

    def counting_update(student, teacher, momentum):
        calls.append((run.global_step, momentum))
        update(student, teacher, momentum)

    monkeypatch.setattr(voco_module_source, "update_momentum", counting_update)
    module = make("voco", teacher_head=teacher_head, momentum=0.5)
    run = trainer(
        max_steps=-1, max_epochs=1, limit_train_batches=4, accumulate_grad_batches=accumulate
    )
    run.fit(module, batches("voco", count=4, batch_size=1))

    assert run.global_step == steps
    assert len(calls) == per_step * steps, "encoder (and head with ema) once per optimiser step"
    # One update per optimiser step (made before Lightning counts the step).
    assert sorted({step for step, _ in calls}) == list(range(steps))


# ------------------------------------------------------------------------ DataLoader options
@pytest.fixture(scope="module")
def rsna_cache_dir(tiny_cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache_dir = tmp_path_factory.mktemp("speed_rsna_cache")
    rsna_module(tiny_cohort.rsna_root, cache_dir).prepare_data()
    return cache_dir


class PidRecordingView:
    """The whole volume, and a file named after the process that made it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, volume, rng) -> dict:
        (self.directory / str(os.getpid())).touch()
        return {"volume": torch.from_numpy(np.array(volume))}


@pytest.mark.parametrize(("persistent", "starts"), [(True, 1), (False, 2)])
def test_worker_options_reach_the_dataloader(
    tiny_cohort, rsna_cache_dir, tmp_path, monkeypatch, persistent: bool, starts: int
) -> None:
    started = tmp_path / "starts"
    started.mkdir()
    dm = rsna_module(
        tiny_cohort.rsna_root,
        rsna_cache_dir,
        fold=0,
        batch_size=2,
        num_workers=1,
        persistent_workers=persistent,
        pin_memory=False,
        prefetch_factor=2,
        views=PidRecordingView(started),
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 1
    assert loader.persistent_workers is persistent
    assert loader.pin_memory is False
    assert loader.prefetch_factor == 2

    epochs = [list(loader) for _ in range(2)]
    for epoch in epochs:
        keys = [k for b in epoch for k in b["key"]]
        assert sorted(keys) == sorted(dm.train_set.items["key"])
        assert epoch[0]["volume"].shape == (2, *TINY_SHAPE)
        assert epoch[0]["volume"].dtype == torch.uint8
    assert len(list(started.iterdir())) == starts, "persistent workers start once for 2 epochs"
    assert str(os.getpid()) not in {p.name for p in started.iterdir()}


def test_no_workers_drop_persistence_and_prefetch(tiny_cohort, rsna_cache_dir) -> None:
    dm = rsna_module(
        tiny_cohort.rsna_root,
        rsna_cache_dir,
        fold=0,
        num_workers=0,
        persistent_workers=True,
        prefetch_factor=2,
    )
    assert dm.persistent_workers is False
    assert dm.prefetch_factor is None
    dm.setup("fit")
    loader = dm.train_dataloader()  # torch would raise for either option without workers
    assert loader.num_workers == 0
    assert loader.persistent_workers is False
    assert loader.prefetch_factor is None
    batch = next(iter(loader))
    assert batch["volume"].shape[1:] == TINY_SHAPE
