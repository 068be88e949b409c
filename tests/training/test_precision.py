"""Numerical precision on CPU for both LightningModules: bf16-mixed, 32-true, 16-mixed.

Each test runs a tiny ``pl.Trainer(accelerator="cpu")`` over in-memory dict batches (the
helpers of the module tests) with timm's ``test_efficientnet``. Covered: finite losses under
both supported precisions, that autocast really runs the encoder in bfloat16, gradient
clipping under bf16-mixed (observed after the clip, on the optimiser step), the non-finite
loss policy under bf16-mixed, float32 classifier losses from bfloat16 logits, what
Lightning does with ``trainer.precision=16-mixed`` on a CPU, and real fp16 (a float16
autocast plugin with a CPU gradient scaler): steps the scaler skips leave the EMA teacher
alone and are counted as non-finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader

import ctvoco.classify.module as classify_module
from ctvoco.classify.module import InjuryClassifier
from ctvoco.labels import TARGETS
from ctvoco.training.guards import NonFiniteLossError
from ctvoco.voco.losses import VoCoLossOutput
from ctvoco.voco.module import VoCoPretrainer
from tests.classify.test_module import DictBatches
from tests.training.module_args import build
from tests.voco.test_module import loader as voco_loader
from tests.voco.test_module import make_module as voco_module

PRECISIONS = ("32-true", "bf16-mixed")
KINDS = ("voco", "classifier")
EXPECTED_ENCODER_DTYPE = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16}


# ------------------------------------------------------------------------ helpers
def classifier_module(**kwargs: Any) -> InjuryClassifier:
    torch.manual_seed(kwargs.pop("seed", 0))
    return build(
        InjuryClassifier, **{"backbone": "test_efficientnet", "hidden": 8, "lr": 1e-3, **kwargs}
    )


def classifier_loader(count: int = 4, batch_size: int = 2) -> DataLoader:
    rng = np.random.default_rng(0)
    classes = np.stack([rng.integers(0, k, size=count) for k in (2, 2, 3, 3, 3)], axis=1)
    data = DictBatches(list(range(1, count + 1)), list(range(101, 101 + count)), classes)
    return DataLoader(data, batch_size=batch_size)


MAKERS: dict[str, tuple[Callable[..., pl.LightningModule], Callable[..., DataLoader]]] = {
    "voco": (voco_module, voco_loader),
    "classifier": (classifier_module, classifier_loader),
}


def make(kind: str, **kwargs: Any) -> pl.LightningModule:
    return MAKERS[kind][0](**kwargs)


def batches(kind: str, count: int, batch_size: int = 2) -> DataLoader:
    return MAKERS[kind][1](count=count, batch_size=batch_size)


def encoder(module: pl.LightningModule) -> nn.Module:
    """The (student) slice encoder of either module."""
    if isinstance(module, VoCoPretrainer):
        return module.student_encoder
    return module.net.encoder


def trainer(**kwargs: Any) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    }
    options.update(kwargs)
    return pl.Trainer(**options)


def parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def grad_norm(params: list[torch.Tensor]) -> float:
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


class LossRecorder(pl.Callback):
    """The loss returned by every training step (``None`` for a skipped step)."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor | None] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = (outputs or {}).get("loss")  # Lightning passes {} for a skipped step
        self.losses.append(None if loss is None else loss.detach())


class EncoderOutputDtype(pl.Callback):
    """The dtype the (student) encoder computes in during training (autocast shows here)."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()
        self._handle: Any = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._handle = encoder(pl_module).register_forward_hook(
            lambda module, args, output: self.dtypes.add(output.dtype)
        )

    def on_train_end(self, trainer, pl_module) -> None:
        self._handle.remove()


class ClippedGradNorm(pl.Callback):
    """Gradient norm before clipping and as the optimiser sees it (after clipping).

    Lightning calls ``on_before_optimizer_step`` *before* it clips, so the clipped norm is
    read from an optimiser step post-hook: the gradients the update was made with.
    """

    def __init__(self) -> None:
        self.before: list[float] = []
        self.after: list[float] = []
        self.grad_dtypes: set[torch.dtype] = set()
        self._handle: Any = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._handle = trainer.optimizers[0].register_step_post_hook(self._after_step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before.append(grad_norm([p for g in optimizer.param_groups for p in g["params"]]))

    def _after_step(self, optimizer, args, kwargs) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.grad_dtypes |= {p.grad.dtype for p in params if p.grad is not None}
        self.after.append(grad_norm(params))

    def on_train_end(self, trainer, pl_module) -> None:
        self._handle.remove()


def scale_loss(module: pl.LightningModule, factor: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multiply every finite training loss by ``factor`` (large gradients to clip)."""
    step = module.training_step

    def training_step(batch, batch_idx):
        loss = step(batch, batch_idx)
        return None if loss is None else loss * factor

    monkeypatch.setattr(module, "training_step", training_step)


def nan_losses(module: pl.LightningModule, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every training loss NaN, keeping the autograd graph."""
    if isinstance(module, VoCoPretrainer):
        criterion = module.criterion.forward

        def forward(*args, **kwargs):
            out = criterion(*args, **kwargs)
            return VoCoLossOutput(*(v * float("nan") for v in out))

        monkeypatch.setattr(module.criterion, "forward", forward)
        return
    injury_loss = classify_module.injury_loss

    def nan_injury_loss(*args, **kwargs):
        loss, parts = injury_loss(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(classify_module, "injury_loss", nan_injury_loss)


# ------------------------------------------------------------------------ supported precisions
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_training_gives_finite_losses(kind: str, precision: str) -> None:
    module = make(kind)
    losses, dtypes = LossRecorder(), EncoderOutputDtype()
    run = trainer(max_steps=3, precision=precision, callbacks=[losses, dtypes])
    run.fit(module, batches(kind, count=6))

    assert run.global_step == 3
    assert len(losses.losses) == 3
    assert all(loss is not None and math.isfinite(float(loss)) for loss in losses.losses)
    assert math.isfinite(float(run.callback_metrics["train/loss"]))
    assert module.guard.count == 0
    assert dtypes.dtypes == {EXPECTED_ENCODER_DTYPE[precision]}, "autocast follows precision"
    assert all(p.dtype == torch.float32 for p in module.parameters()), "weights stay float32"


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_clipping_under_bf16_mixed(kind: str, monkeypatch) -> None:
    module = make(kind)
    scale_loss(module, 1e3, monkeypatch)  # gradients far above the clip value
    norms = ClippedGradNorm()
    run = trainer(
        max_steps=2,
        precision="bf16-mixed",
        gradient_clip_val=1.0,
        gradient_clip_algorithm="norm",
        callbacks=[norms],
    )
    run.fit(module, batches(kind, count=4))

    assert run.global_step == 2
    assert len(norms.before) == len(norms.after) == 2, "one clip per optimiser step"
    assert all(n > 1.0 for n in norms.before), norms.before
    assert all(n <= 1.0 + 1e-3 for n in norms.after), norms.after
    assert norms.after == pytest.approx([1.0, 1.0], rel=1e-3), "clipped to the limit exactly"
    assert norms.grad_dtypes == {torch.float32}, "gradients of float32 weights are float32"


@pytest.mark.parametrize("kind", KINDS)
def test_nonfinite_steps_are_skipped_and_counted_under_bf16_mixed(kind: str, monkeypatch) -> None:
    module = make(kind, max_nonfinite=5)
    nan_losses(module, monkeypatch)
    losses = LossRecorder()
    before = parameters(module)
    run = trainer(
        max_steps=-1,
        max_epochs=1,
        limit_train_batches=2,
        precision="bf16-mixed",
        callbacks=[losses],
    )
    run.fit(module, batches(kind, count=2, batch_size=1))

    assert losses.losses == [None, None], "a non-finite step returns no loss"
    assert module.guard.count == 2
    assert float(run.callback_metrics["train/nonfinite_count"]) == 2.0
    after = parameters(module)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert not moved, f"{len(moved)} tensors changed on skipped steps (e.g. {moved[:3]})"


@pytest.mark.parametrize("kind", KINDS)
def test_too_many_nonfinite_losses_stop_bf16_training(kind: str, monkeypatch) -> None:
    module = make(kind, max_nonfinite=2)
    nan_losses(module, monkeypatch)
    run = trainer(max_steps=-1, max_epochs=1, limit_train_batches=5, precision="bf16-mixed")
    with pytest.raises(NonFiniteLossError, match="max_nonfinite=2"):
        run.fit(module, batches(kind, count=5, batch_size=1))
    assert module.guard.count == 3, "max_nonfinite + 1 non-finite losses stop the run"


def test_classifier_losses_are_float32_from_bf16_logits(monkeypatch) -> None:
    seen: list[dict[str, Any]] = []
    injury_loss = classify_module.injury_loss

    def recording_injury_loss(logits, *args, **kwargs):
        loss, parts = injury_loss(logits, *args, **kwargs)
        seen.append(
            {
                "logits": {t: v.dtype for t, v in logits.items()},
                "loss": loss.dtype,
                "parts": {t: v.dtype for t, v in parts.items()},
            }
        )
        return loss, parts

    monkeypatch.setattr(classify_module, "injury_loss", recording_injury_loss)
    module = classifier_module()
    trainer(max_steps=1, precision="bf16-mixed").fit(module, batches("classifier", count=2))

    assert len(seen) == 1
    assert set(seen[0]["logits"].values()) == {torch.bfloat16}, "the heads ran under autocast"
    assert seen[0]["loss"] == torch.float32
    assert seen[0]["parts"] == dict.fromkeys(TARGETS, torch.float32)


# ------------------------------------------------------------------------ 16-mixed on a CPU
def test_16_mixed_on_cpu_falls_back_to_bf16_mixed_with_a_warning() -> None:
    """Lightning 2.6 does not refuse fp16 AMP on CPU: it warns and switches to bf16-mixed.

    This pins the current behaviour; if Lightning starts raising instead, configs that
    set ``trainer.precision=16-mixed`` for CPU runs need to change.
    """
    dtypes, losses = EncoderOutputDtype(), LossRecorder()
    with pytest.warns(UserWarning, match=r"fp16 is not supported on CPU.*bf16-mixed"):
        run = trainer(max_steps=1, precision="16-mixed", callbacks=[dtypes, losses])
    assert run.precision == "bf16-mixed"
    plugin = run.precision_plugin
    assert isinstance(plugin, MixedPrecision)
    assert plugin.precision == "bf16-mixed"
    assert plugin.scaler is None, "no fp16 gradient scaler on the fallback"

    module = make("classifier")
    run.fit(module, batches("classifier", count=2))
    assert dtypes.dtypes == {torch.bfloat16}, "the fallback computes in bfloat16, not float16"
    assert math.isfinite(float(losses.losses[0]))


# ------------------------------------------------------------------------ fp16 gradient scaler
def fp16_plugin(init_scale: float = 2.0**16) -> MixedPrecision:
    """Real ``16-mixed`` on a CPU: float16 autocast with a CPU gradient scaler."""
    return MixedPrecision(
        "16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale)
    )


def shifted_teacher(module: VoCoPretrainer) -> dict[str, torch.Tensor]:
    """Move the teacher away from the student (an EMA step then changes it) and snapshot it."""
    with torch.no_grad():
        for p in [*module.teacher_encoder.parameters(), *module.teacher_head.parameters()]:
            p.add_(0.05)
    return parameters(module.teacher_encoder) | parameters(module.teacher_head)


def teacher_changes(module: VoCoPretrainer, before: dict[str, torch.Tensor]) -> list[str]:
    after = parameters(module.teacher_encoder) | parameters(module.teacher_head)
    return [k for k in before if not torch.equal(before[k], after[k])]


def test_fp16_scaler_skipped_steps_leave_the_teacher_alone_and_are_counted() -> None:
    module = make("voco", max_nonfinite=5)
    teacher = shifted_teacher(module)
    student = parameters(module.student_encoder)
    # Finite losses, infinite gradients: the scaler skips optimizer.step() every time.
    weight = next(module.student_head.parameters())
    weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    losses, plugin = LossRecorder(), fp16_plugin()
    run = trainer(
        max_steps=-1, max_epochs=1, limit_train_batches=2, plugins=[plugin], callbacks=[losses]
    )
    run.fit(module, batches("voco", count=2, batch_size=1))

    assert all(loss is not None and math.isfinite(float(loss)) for loss in losses.losses)
    assert plugin.scaler.get_scale() == 2.0**14, "the scaler backed off twice: both skipped"
    assert not [
        k for k in student if not torch.equal(student[k], parameters(module.student_encoder)[k])
    ]
    changed = teacher_changes(module, teacher)
    assert not changed, f"{len(changed)} teacher tensors moved on scaler-skipped steps"
    assert module.guard.count == 0, "the losses were finite"
    assert module.guard.scaler_skips == 2, "both skipped steps are counted"
    assert float(run.callback_metrics["train/scaler_skipped_steps"]) == 2.0
    assert float(run.callback_metrics["train/nonfinite_count"]) == 0.0


def test_fp16_scaler_skips_stop_the_run_only_when_unbroken() -> None:
    module = make("voco", max_nonfinite=0)
    module.guard.max_consecutive_scaler_skips = 3
    next(module.student_head.parameters()).register_hook(
        lambda grad: torch.full_like(grad, float("nan"))
    )
    run = trainer(max_steps=-1, max_epochs=1, limit_train_batches=4, plugins=[fp16_plugin()])
    with pytest.raises(NonFiniteLossError, match="3 optimiser steps in a row"):
        run.fit(module, batches("voco", count=4, batch_size=1))
    assert module.guard.scaler_skips == 3
    assert module.guard.count == 0


def test_fp16_steps_the_scaler_takes_update_the_teacher() -> None:
    module = make("voco", max_nonfinite=0)  # any skipped step would raise
    teacher = shifted_teacher(module)
    dtypes, plugin = EncoderOutputDtype(), fp16_plugin(init_scale=1.0)  # no overflow
    run = trainer(max_steps=2, plugins=[plugin], callbacks=[dtypes])
    run.fit(module, batches("voco", count=2, batch_size=1))

    assert dtypes.dtypes == {torch.float16}, "the encoder really ran in float16"
    assert plugin.scaler.get_scale() == 1.0, "no step was skipped"
    assert module.guard.count == 0
    assert teacher_changes(module, teacher), "the EMA teacher moved"
    assert float(run.callback_metrics["train/nonfinite_count"]) == 0.0


class SkipOptimizerSteps(pl.Callback):
    """Stands in for the fp16 scaler skipping ``optimizer.step()`` (fp16 LSTMs have no CPU
    kernels): the closure runs, the step does not."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            optimizer.step = lambda closure=None: closure()


def test_skipped_classifier_optimizer_steps_are_counted() -> None:
    module = make("classifier", max_nonfinite=0)
    before = parameters(module.net)
    run = trainer(
        max_steps=-1, max_epochs=1, limit_train_batches=2, callbacks=[SkipOptimizerSteps()]
    )
    run.fit(module, batches("classifier", count=2, batch_size=1))
    assert module.guard.count == 0
    assert module.guard.scaler_skips == 2
    assert float(run.callback_metrics["train/scaler_skipped_steps"]) == 2.0
    assert all(torch.equal(before[k], v) for k, v in parameters(module.net).items())
