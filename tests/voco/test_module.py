"""Tests for ctvoco.voco.module.VoCoPretrainer, driven by a tiny CPU ``pl.Trainer``.

The data are in-memory dict batches made with :class:`VoCoViews` from small structured
uint8 volumes; the backbone is timm's tiny ``test_efficientnet``.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ctvoco.errors import UserError
from ctvoco.training.guards import NonFiniteLossError
from ctvoco.voco.losses import VoCoLossOutput, similarity
from ctvoco.voco.module import VoCoPretrainer, first_occurrences, unique_gathered
from ctvoco.voco.position import position_errors
from ctvoco.voco.views import VoCoViews
from tests.training.module_args import build

BACKBONE = "test_efficientnet"
GRID, CROP, NUM_RANDOM, SLICES = 2, 32, 2, 2


class VolumeSamples(Dataset):
    """VoCo samples of small random volumes with a body and an off-centre organ."""

    def __init__(self, count: int, views: VoCoViews) -> None:
        self.count = count
        self.views = views

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(index)
        volume = rng.integers(0, 40, size=(6, 40, 44)).astype(np.uint8)
        volume[:, 4:36, 4:40] += 80
        volume[:, 8 + index % 4 : 20 + index % 4, 6:18] = 230
        return self.views(volume, rng)


def loader(count: int = 4, batch_size: int = 2, crop: int = CROP) -> DataLoader:
    views = VoCoViews(grid=GRID, crop_size=crop, num_random=NUM_RANDOM, num_slices=SLICES, depth=4)
    return DataLoader(VolumeSamples(count, views), batch_size=batch_size)


def make_module(**kwargs) -> VoCoPretrainer:
    params = {
        "backbone": BACKBONE,
        "crop_size": CROP,
        "grid": GRID,
        "num_random": NUM_RANDOM,
        "head_hidden": 32,
        "head_out": 16,
        "lr": 1e-3,
        "warmup_steps": 1,
        "momentum": 0.5,
        "momentum_schedule": "constant",
    }
    params.update(kwargs)
    return build(VoCoPretrainer, **params)


def make_trainer(**kwargs) -> pl.Trainer:
    params = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    params.update(kwargs)
    return pl.Trainer(**params)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


class GradientRecorder(pl.Callback):
    """Which parameters hold a gradient just before the optimiser step."""

    def __init__(self) -> None:
        self.with_grad: set[str] = set()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.with_grad = {
            name
            for name, p in pl_module.named_parameters()
            if p.grad is not None and bool(p.grad.abs().sum() > 0)
        }


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.outputs: list = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.outputs.append(outputs)


# ------------------------------------------------------------------------ training step
@pytest.mark.parametrize("batch_size", [1, 2])
def test_training_step_updates_student_and_teacher_by_ema(batch_size):
    m = 0.5
    module = make_module(momentum=m, teacher_head="ema")
    old_teacher = snapshot(module.teacher_encoder) | {
        f"head.{k}": v for k, v in snapshot(module.teacher_head).items()
    }
    old_student = snapshot(module.student_encoder)
    losses = LossRecorder()
    trainer = make_trainer(callbacks=[losses])
    trainer.fit(module, loader(count=2, batch_size=batch_size))

    assert trainer.global_step == 1
    assert len(losses.outputs) == 1
    assert math.isfinite(float(losses.outputs[0]["loss"]))
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))

    new_student = snapshot(module.student_encoder)
    changed = [k for k in new_student if not torch.equal(new_student[k], old_student[k])]
    assert len(changed) == len(new_student), "every student backbone tensor gets a step"

    # Teacher = m * old teacher + (1 - m) * NEW student: EMA after the optimiser step.
    new_teacher = snapshot(module.teacher_encoder)
    for k, value in new_teacher.items():
        expected = m * old_teacher[k] + (1 - m) * new_student[k]
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(value, new_student[k])
    student_head = snapshot(module.student_head)
    for k, value in snapshot(module.teacher_head).items():
        expected = m * old_teacher[f"head.{k}"] + (1 - m) * student_head[k]
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)


def test_ema_teacher_gets_no_gradient():
    module = make_module(teacher_head="ema")
    teacher = [*module.teacher_encoder.parameters(), *module.teacher_head.parameters()]
    assert not any(p.requires_grad for p in teacher)
    grads = GradientRecorder()
    make_trainer(callbacks=[grads]).fit(module, loader(count=2))
    assert grads.with_grad, "the student got gradients"
    assert all(n.startswith("student_") for n in grads.with_grad), sorted(grads.with_grad)[:5]
    assert all(p.grad is None for p in teacher)
    optimised = {id(p) for group in module.optimizers().param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in teacher)


def test_trained_teacher_head_is_trained_by_gradient_and_backbone_by_ema():
    m = 0.5
    module = make_module(momentum=m, teacher_head="trained")
    assert all(p.requires_grad for p in module.teacher_head.parameters())
    assert not any(p.requires_grad for p in module.teacher_encoder.parameters())
    old_teacher = snapshot(module.teacher_encoder)
    old_head = snapshot(module.teacher_head)
    grads = GradientRecorder()
    make_trainer(callbacks=[grads]).fit(module, loader(count=2))

    head_names = {f"teacher_head.{k}" for k in old_head}
    assert head_names & grads.with_grad, "teacher head gets gradients through the intra loss"
    assert not any(n.startswith("teacher_encoder.") for n in grads.with_grad)
    assert all(p.grad is None for p in module.teacher_encoder.parameters())
    new_student = snapshot(module.student_encoder)
    for k, value in snapshot(module.teacher_encoder).items():
        torch.testing.assert_close(value, m * old_teacher[k] + (1 - m) * new_student[k])
    # The head moved by its own optimiser step, not by EMA towards the student head.
    student_head = snapshot(module.student_head)
    new_head = snapshot(module.teacher_head)
    assert any(not torch.equal(new_head[k], old_head[k]) for k in new_head)
    assert any(
        not torch.allclose(new_head[k], m * old_head[k] + (1 - m) * student_head[k])
        for k in new_head
    )


def test_research_preset_per_slot_norm_and_flatten_pooling():
    crop = 64  # test_efficientnet maps 64x64 to a 2x2 feature map: flatten = 4 * avg
    module = make_module(
        init="random",
        pooling="flatten",
        head_norm="per_slot",
        teacher_head="trained",
        momentum=0.9,
        crop_size=crop,
    )
    assert module.student_encoder.out_features == 4 * module.student_encoder.backbone.num_features
    losses = LossRecorder()
    make_trainer(callbacks=[losses]).fit(module, loader(count=2, crop=crop))
    assert math.isfinite(float(losses.outputs[0]["loss"]))


def test_embed_shapes():
    module = make_module().eval()
    batch = next(iter(loader(count=2)))
    emb = module.embed(batch["random"], batch["base"])
    assert emb["student_random"].shape == (2, NUM_RANDOM, 16)
    assert emb["teacher_random"].shape == (2, NUM_RANDOM, 16)
    assert emb["student_base"].shape == (2, GRID * GRID, 16)
    assert emb["teacher_base"].shape == (2, GRID * GRID, 16)
    assert not emb["teacher_base"].requires_grad


# ------------------------------------------------------------------------ loss weights
def test_intra_only_total_equals_intra():
    module = make_module(w_inter=0.0, w_reg=0.0)
    trainer = make_trainer()
    trainer.fit(module, loader(count=2))
    metrics = trainer.callback_metrics
    torch.testing.assert_close(metrics["train/loss"], metrics["train/intra"])
    assert float(metrics["train/inter"]) == 0.0
    assert float(metrics["train/reg"]) == 0.0
    assert float(metrics["train/intra"]) > 0.0


def test_all_loss_weights_zero_is_an_error():
    with pytest.raises(UserError, match="not all 0"):
        make_module(w_intra=0.0, w_inter=0.0, w_reg=0.0)


# ------------------------------------------------------------------------ non-finite policy
def nan_criterion(module: VoCoPretrainer, monkeypatch: pytest.MonkeyPatch) -> None:
    def forward(*args, **kwargs):
        nan = torch.tensor(float("nan"), requires_grad=True)
        return VoCoLossOutput(nan * 1.0, nan * 1.0, nan * 1.0, nan * 1.0)

    monkeypatch.setattr(module.criterion, "forward", forward)


def record_step_returns(module: VoCoPretrainer, monkeypatch: pytest.MonkeyPatch) -> list:
    returned: list = []
    step = module.training_step

    def training_step(batch, batch_idx):
        out = step(batch, batch_idx)
        returned.append(out)
        return out

    monkeypatch.setattr(module, "training_step", training_step)
    return returned


def test_nonfinite_losses_are_skipped_and_counted(monkeypatch, tmp_path: Path):
    module = make_module(max_nonfinite=5)
    nan_criterion(module, monkeypatch)
    returned = record_step_returns(module, monkeypatch)
    before = snapshot(module.student_encoder)
    trainer = make_trainer(max_steps=-1, max_epochs=1, limit_train_batches=2)
    trainer.fit(module, loader(count=2, batch_size=1))

    assert returned == [None, None], "training_step returns None on a non-finite loss"
    assert module.guard.count == 2
    after = snapshot(module.student_encoder)
    assert all(torch.equal(before[k], after[k]) for k in before), "the student did not move"
    assert float(trainer.callback_metrics["train/nonfinite_count"]) == 2.0

    # The count travels with the checkpoint.
    path = tmp_path / "nan.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["nonfinite_guard"] == {"count": 2, "scaler_skips": 0}
    restored = VoCoPretrainer.load_from_checkpoint(path, map_location="cpu")
    assert restored.guard.count == 2


def test_nonfinite_step_leaves_the_teacher_alone(monkeypatch):
    module = make_module(momentum=0.5, max_nonfinite=5)
    with torch.no_grad():  # a teacher that differs from the student, as after some training
        for p in [*module.teacher_encoder.parameters(), *module.teacher_head.parameters()]:
            p.add_(0.05)
    nan_criterion(module, monkeypatch)
    teacher = snapshot(module.teacher_encoder) | snapshot(module.teacher_head)
    make_trainer(max_steps=-1, max_epochs=1, limit_train_batches=1).fit(
        module, loader(count=1, batch_size=1)
    )
    assert module.guard.count == 1
    after = snapshot(module.teacher_encoder) | snapshot(module.teacher_head)
    changed = [k for k in teacher if not torch.equal(teacher[k], after[k])]
    assert not changed, f"{len(changed)} teacher tensors moved on a skipped step"


def test_too_many_nonfinite_losses_stop_training(monkeypatch):
    module = make_module(max_nonfinite=1)
    nan_criterion(module, monkeypatch)
    trainer = make_trainer(max_steps=-1, max_epochs=1, limit_train_batches=3)
    with pytest.raises(NonFiniteLossError, match="max_nonfinite=1"):
        trainer.fit(module, loader(count=3, batch_size=1))
    assert module.guard.count == 2, "max_nonfinite + 1 non-finite losses stop the run"


def test_guard_state_hooks_round_trip():
    module = make_module()
    module.guard.count = 4
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["nonfinite_guard"] == {"count": 4, "scaler_skips": 0}
    other = make_module()
    other.on_load_checkpoint(checkpoint)
    assert other.guard.count == 4
    other.on_load_checkpoint({})  # old checkpoints without the entry
    assert other.guard.count == 0


# ------------------------------------------------------------------------ validation
def test_validation_logs_position_metrics():
    module = make_module()
    trainer = make_trainer()
    trainer.validate(module, dataloaders=loader(count=4, batch_size=2), verbose=False)
    metrics = trainer.callback_metrics
    for key in ("val/position_mae", "val/position_mae_trivial", "val/loss", "val/intra"):
        assert key in metrics, key
        assert math.isfinite(float(metrics[key])), key
    assert "val/position_rank_corr" in metrics
    corr = float(metrics["val/position_rank_corr"])
    assert math.isnan(corr) or -1.0 <= corr <= 1.0
    assert 0.0 <= float(metrics["val/position_mae"]) <= 1.0
    assert 0.0 < float(metrics["val/position_mae_trivial"]) < 1.0
    assert module._val_sims == [] and module._val_targets == []


# ------------------------------------------------- validation over ranks: sampler padding
@pytest.mark.parametrize(
    ("index", "expected"),
    [
        ([0, 2, 4, 1, 3, 0], [0, 1, 2, 3, 4]),  # 5 volumes on 2 ranks: rank 1 repeats 0
        ([3, 3, 3], [0]),
        ([5, 1, 5, 1, 2], [0, 1, 4]),
        ([-1, 0, -1, 0], [0, 1, 2]),  # unknown indices are all kept
        ([], []),
    ],
)
def test_first_occurrences(index, expected):
    keep = first_occurrences(torch.tensor(index, dtype=torch.long))
    assert keep.dtype == torch.long
    assert keep.tolist() == expected


def sampler_shards(size: int, world: int) -> list[list[int]]:
    """The indices ``DistributedSampler`` gives each rank (no shuffling, padded)."""
    data = list(range(size))
    return [
        list(DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False))
        for rank in range(world)
    ]


def test_unique_gathered_scores_every_volume_once():
    shards = sampler_shards(5, 2)
    assert shards == [[0, 2, 4], [1, 3, 0]], "the sampler pads rank 1 with volume 0"
    # Per-volume results that depend on the rank: the padded repeat differs from the original.
    sims = torch.stack(
        [
            torch.full((3, 2, 4), 10.0 * r) + torch.tensor(s).view(3, 1, 1)
            for r, s in enumerate(shards)
        ]
    )
    targets = sims + 0.5
    index = torch.tensor(shards)
    kept_sims, kept_targets = unique_gathered(sims, targets, index)
    assert kept_sims.shape == (5, 2, 4)
    # rank-major, first occurrence: [0, 2, 4] from rank 0, then [1, 3] from rank 1
    assert kept_sims[:, 0, 0].tolist() == [0.0, 2.0, 4.0, 11.0, 13.0]
    torch.testing.assert_close(kept_targets, kept_sims + 0.5)


class IndexedSamples(VolumeSamples):
    """:class:`VolumeSamples` with the dataset index, as :class:`ctvoco.data.VolumeDataset`."""

    def __getitem__(self, index: int) -> dict:
        return {**super().__getitem__(index), "index": index}


def indexed_views() -> VoCoViews:
    return VoCoViews(grid=GRID, crop_size=CROP, num_random=NUM_RANDOM, num_slices=SLICES, depth=4)


def rank_batch(dataset: Dataset, indices: list[int]) -> dict:
    return next(
        iter(DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=len(indices)))
    )


def test_validation_metrics_on_two_ranks_drop_the_padding(monkeypatch):
    """5 volumes on 2 (simulated) ranks: the metrics are those of the 5 volumes, once each."""
    torch.manual_seed(0)
    module = make_module()
    dataset = IndexedSamples(5, indexed_views())
    shards = sampler_shards(5, 2)
    module.eval()
    with torch.no_grad():  # what each rank computes for its shard (one batch per rank)
        local = {}
        for rank, shard in enumerate(shards):
            batch = rank_batch(dataset, shard)
            emb = module.embed(batch["random"], batch["base"])
            local[rank] = (
                similarity(emb["student_random"], emb["teacher_base"]).float(),
                batch["targets"].float(),
                batch["index"],
            )
    gathered = [torch.stack([local[0][i], local[1][i]]) for i in range(3)]
    calls: list[int] = []

    def all_gather(tensor, *args, **kwargs):
        position = len(calls) % 3  # sims, targets, index in this order
        calls.append(position)
        assert torch.equal(tensor, local[0][position]), "rank 0 gathers its own results"
        return gathered[position]

    monkeypatch.setattr(pl.Trainer, "world_size", property(lambda self: 2))
    monkeypatch.setattr(module, "all_gather", all_gather)
    trainer = make_trainer()
    loader0 = DataLoader(torch.utils.data.Subset(dataset, shards[0]), batch_size=3)
    trainer.validate(module, dataloaders=loader0, verbose=False)

    assert calls == [0, 1, 2]
    once = [0, 1, 2, 3, 4]  # positions of [0, 2, 4 | 1, 3] in the flattened gathered order
    expected = position_errors(gathered[0].flatten(0, 1)[once], gathered[1].flatten(0, 1)[once])
    with_padding = position_errors(gathered[0].flatten(0, 1), gathered[1].flatten(0, 1))
    metrics = trainer.callback_metrics
    assert float(metrics["val/position_mae"]) == pytest.approx(float(expected["mae"]))
    assert float(metrics["val/position_mae_trivial"]) == pytest.approx(
        float(expected["trivial_mae"])
    )
    assert float(metrics["val/position_mae"]) != pytest.approx(float(with_padding["mae"]))


# ------------------------------------------------------------------------ LR schedule
class LrRecorder(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.momenta: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.momenta.append(pl_module.current_momentum())


def test_lr_warmup_then_cosine_and_momentum_towards_one():
    lr, warmup, total, min_ratio = 1e-3, 2, 5, 0.1
    module = make_module(
        lr=lr, warmup_steps=warmup, min_lr_ratio=min_ratio, momentum=0.9, momentum_schedule="cosine"
    )
    recorder = LrRecorder()
    make_trainer(max_steps=total, callbacks=[recorder]).fit(module, loader(count=3, batch_size=1))

    def cosine(progress: float) -> float:
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    expected = [0.5, 1.0] + [cosine(i / (total - warmup)) for i in range(total - warmup)]
    assert recorder.lrs == pytest.approx([lr * f for f in expected], rel=1e-6)
    assert recorder.lrs[0] < recorder.lrs[1]
    assert all(a >= b for a, b in itertools.pairwise(recorder.lrs[1:]))
    # EMA momentum: cosine from 0.9 at step 0 to 1 at the last step.
    assert recorder.momenta[0] == pytest.approx(0.9)
    assert all(a <= b for a, b in itertools.pairwise(recorder.momenta))
    assert module.current_momentum() == pytest.approx(1.0)


# ------------------------------------------------------------------------ bad options
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("teacher_head", "student"),
        ("momentum_schedule", "linear"),
        ("inter_pairing", "random"),
        ("momentum", 1.5),
    ],
)
def test_bad_option_is_a_user_error(key, value):
    with pytest.raises(UserError, match=key):
        make_module(**{key: value})


def test_unknown_backbone_suggests_similar_names():
    with pytest.raises(UserError, match="similar names") as info:
        make_module(backbone="test_efficientnett")
    assert "test_efficientnet" in str(info.value)


# ------------------------------------------------------------------------ precision
def test_bf16_mixed_with_gradient_clipping(monkeypatch):
    module = make_module()
    norms: list[float] = []
    clip = module.configure_gradient_clipping

    def grad_norm() -> float:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads])))

    def clip_and_record(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        before = grad_norm()
        clip(optimizer, gradient_clip_val, gradient_clip_algorithm)
        norms.append(grad_norm())
        assert norms[-1] <= min(before, 1.0) + 1e-3

    monkeypatch.setattr(module, "configure_gradient_clipping", clip_and_record)
    losses = LossRecorder()
    trainer = make_trainer(
        max_steps=1, precision="bf16-mixed", gradient_clip_val=1.0, callbacks=[losses]
    )
    trainer.fit(module, loader(count=2, batch_size=2))
    assert trainer.global_step == 1
    assert all(math.isfinite(float(o["loss"])) for o in losses.outputs)
    assert len(norms) == 1, "clipping ran on the optimiser step"
    assert all(n <= 1.0 + 1e-3 for n in norms)
