"""Options of VoCo pretraining that reproduce the research code (commit c456755).

- ``dropout_at``: dropout on each slice's features before the slice mean, or on the mean;
- ``intra_symmetric``: the intra-volume term of the research code's V1 head;
- ``schedule_steps``: the cosine horizon apart from the run length;
- ``gradient_clip_val``: the module's own clipping norm (0: never clip).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ctvoco.errors import UserError
from ctvoco.voco.heads import SliceDropout
from ctvoco.voco.losses import VoCoLoss, intra_volume_loss, symmetric_intra_volume_loss
from tests.voco.test_losses import TOL, make_batch, ref_ce, ref_sim, scalar
from tests.voco.test_module import LrRecorder, loader, make_module, make_trainer


# --------------------------------------------------------------------------- dropout place
def _noise_variance(at: str, slices: int, p: float = 0.2, features: int = 40000) -> float:
    """Variance of the slice-averaged feature around its clean value (all features are 1)."""
    torch.manual_seed(0)
    drop = SliceDropout(p, at).train()
    out = drop(torch.ones(1, 1, slices, features))
    assert out.shape == (1, 1, features)
    assert float(out.mean()) == pytest.approx(1.0, abs=0.02), "dropout keeps the mean"
    return float((out - 1.0).square().mean())


@pytest.mark.parametrize("slices", [8, 32])
def test_slice_dropout_noise_is_one_over_s_of_crop_dropout(slices: int) -> None:
    p = 0.2
    crop = _noise_variance("crop", slices, p)
    slice_level = _noise_variance("slice", slices, p)
    assert crop == pytest.approx(p / (1 - p), rel=0.05)
    assert slice_level == pytest.approx(crop / slices, rel=0.1)


def test_slice_dropout_is_the_plain_mean_in_eval_mode() -> None:
    x = torch.randn(2, 3, 4, 5)
    for at in ("slice", "crop"):
        torch.testing.assert_close(SliceDropout(0.5, at).eval()(x), x.mean(dim=2))


def test_unknown_dropout_place_is_a_user_error() -> None:
    with pytest.raises(UserError, match="dropout_at"):
        make_module(dropout_at="feature")


@pytest.mark.parametrize(("at", "ndim"), [("slice", 4), ("crop", 3)])
def test_pretrainer_drops_out_where_dropout_at_says(at: str, ndim: int) -> None:
    module = make_module(dropout=0.2, dropout_at=at).train()
    seen: list[int] = []
    drops = [m for m in module.modules() if isinstance(m, nn.Dropout)]
    assert drops, "the student path has a dropout"
    for m in drops:
        m.register_forward_hook(lambda _m, args, _out: seen.append(args[0].ndim))
    batch = next(iter(loader(count=2)))
    module.embed(batch["random"], batch["base"])
    assert seen == [ndim], f"dropout input dims {seen}: (B, M, S, d) is slice level"


# --------------------------------------------------------------------------- symmetric intra
def ref_symmetric_intra(sr, sb, tr, tb, y) -> float:
    """Per volume: L(y, (p(s_rand, t_base) + p(t_rand, s_base)) / 2), mean over volumes."""
    total = 0.0
    for b in range(sr.shape[0]):
        preds = [
            [
                0.5 * (ref_sim(sr[b, k], tb[b, j]) + ref_sim(tr[b, k], sb[b, j]))
                for j in range(tb.shape[1])
            ]
            for k in range(sr.shape[1])
        ]
        total += ref_ce(y[b].tolist(), preds)
    return total / sr.shape[0]


@pytest.mark.parametrize(("batch", "k", "n", "seed"), [(3, 2, 3, 0), (1, 2, 4, 1), (2, 3, 2, 2)])
def test_symmetric_intra_matches_reference(batch: int, k: int, n: int, seed: int) -> None:
    sr, sb, tr, tb, y = make_batch(batch=batch, k=k, n=n, seed=seed, offset=0.2)
    got = symmetric_intra_volume_loss(sr, sb, tr, tb, y)
    torch.testing.assert_close(got.double(), scalar(ref_symmetric_intra(sr, sb, tr, tb, y)), **TOL)
    assert not torch.isclose(got, intra_volume_loss(sr, tb, y)), "not the one-sided term"


@pytest.mark.parametrize("detach_teacher", [True, False])
def test_symmetric_intra_gradients(detach_teacher: bool) -> None:
    tensors = [t.requires_grad_(True) for t in make_batch(offset=0.5)[:4]]
    sr, sb, tr, tb = tensors
    y = make_batch(offset=0.5)[4]
    symmetric_intra_volume_loss(sr, sb, tr, tb, y, detach_teacher=detach_teacher).backward()
    assert sr.grad is not None and sb.grad is not None, "both student sides are trained"
    assert (tr.grad is None) == detach_teacher
    assert (tb.grad is None) == detach_teacher


def test_voco_loss_intra_symmetric_switch() -> None:
    sr, sb, tr, tb, y = make_batch(seed=3, offset=0.2)
    plain = VoCoLoss(w_inter=0.0, w_reg=0.0)(sr, sb, tr, tb, y)
    symmetric = VoCoLoss(w_inter=0.0, w_reg=0.0, intra_symmetric=True)(sr, sb, tr, tb, y)
    torch.testing.assert_close(plain.intra, intra_volume_loss(sr, tb, y))
    torch.testing.assert_close(symmetric.intra, symmetric_intra_volume_loss(sr, sb, tr, tb, y))
    assert "intra_symmetric=True" in repr(VoCoLoss(intra_symmetric=True))


def test_pretrainer_passes_intra_symmetric_to_its_loss() -> None:
    assert make_module(intra_symmetric=True).criterion.intra_symmetric is True
    assert make_module().criterion.intra_symmetric is False


# --------------------------------------------------------------------------- schedule horizon
def test_schedule_steps_sets_the_cosine_horizon_apart_from_the_run_length() -> None:
    lr, warmup, horizon, steps = 1e-3, 2, 10, 5
    module = make_module(lr=lr, warmup_steps=warmup, schedule_steps=horizon)
    recorder = LrRecorder()
    make_trainer(max_steps=steps, callbacks=[recorder]).fit(module, loader(count=3, batch_size=1))
    cosine = [0.5 * (1 + math.cos(math.pi * (s - warmup) / (horizon - warmup))) for s in (2, 3, 4)]
    assert recorder.lrs == pytest.approx([lr * f for f in [0.5, 1.0, *cosine]], rel=1e-6)
    assert recorder.lrs[-1] > 0.5 * lr, "a 5-step run of a 10-step schedule ends high"


@pytest.mark.parametrize("value", [0, 3, -1, 2.5])
def test_schedule_steps_must_exceed_the_warmup(value) -> None:
    with pytest.raises(UserError, match="schedule_steps"):
        make_module(warmup_steps=3, schedule_steps=value)


# --------------------------------------------------------------------------- gradient clipping
def _clipped_norms(monkeypatch, module_clip, trainer_clip) -> tuple[float, float]:
    """Gradient norm before and after the module's clipping hook on one optimiser step."""
    module = make_module(gradient_clip_val=module_clip)
    hook = module.configure_gradient_clipping
    norms: list[tuple[float, float]] = []

    def norm() -> float:
        grads = [p.grad.float().norm() for p in module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(grads)))

    def recording(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        before = norm()
        hook(optimizer, gradient_clip_val, gradient_clip_algorithm)
        norms.append((before, norm()))

    monkeypatch.setattr(module, "configure_gradient_clipping", recording)
    make_trainer(gradient_clip_val=trainer_clip).fit(module, loader(count=2))
    assert len(norms) == 1
    return norms[0]


def test_module_clip_zero_never_clips_even_when_the_trainer_would(monkeypatch) -> None:
    before, after = _clipped_norms(monkeypatch, 0.0, 1e-4)
    assert before > 1e-3
    assert after == pytest.approx(before)


def test_module_clip_value_clips_without_a_trainer_value(monkeypatch) -> None:
    before, after = _clipped_norms(monkeypatch, 1e-4, None)
    assert before > 1e-3
    assert after == pytest.approx(1e-4, rel=1e-3)


def test_module_clip_value_replaces_the_trainer_value(monkeypatch) -> None:
    _, after = _clipped_norms(monkeypatch, 2e-4, 1e-4)
    assert after == pytest.approx(2e-4, rel=1e-3)


def test_no_module_clip_leaves_the_trainer_value(monkeypatch) -> None:
    _, after = _clipped_norms(monkeypatch, None, 1e-4)
    assert after == pytest.approx(1e-4, rel=1e-3)


@pytest.mark.parametrize("value", [-1.0, "3"])
def test_bad_module_clip_is_a_user_error(value) -> None:
    with pytest.raises(UserError, match="gradient_clip_val"):
        make_module(gradient_clip_val=value)


# --------------------------------------------------------------------------- both presets train
@pytest.mark.parametrize("v1", [False, True], ids=["v2_batch2", "v1_batch1"])
def test_research_module_settings_train_a_step(v1: bool) -> None:
    """The research settings together (at test size): flatten, per-slot BN, trained teacher."""
    options = {
        "pooling": "flatten",
        "crop_size": 64,
        "head_norm": "per_slot",
        "teacher_head": "trained",
        "momentum": 0.9,
        "dropout_at": "slice",
        "schedule_steps": 100,
        "gradient_clip_val": 0.0,
    }
    if v1:
        options |= {"dropout": 0.0, "w_inter": 0.0, "intra_symmetric": True}
    module = make_module(**options)
    trainer = make_trainer(max_steps=2, gradient_clip_val=3.0)
    trainer.fit(module, loader(count=2, batch_size=1 if v1 else 2, crop=64))
    assert trainer.global_step == 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    inter = float(trainer.callback_metrics["train/inter"])
    assert (inter == 0.0) == v1, "V1 has no inter-volume term"
