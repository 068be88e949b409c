"""Tests for ctvoco.voco.losses against loop-based reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctvoco.voco import losses as losses_module
from ctvoco.voco.losses import (
    VoCoLoss,
    base_regularization_loss,
    inter_volume_loss,
    intra_volume_loss,
    similarity,
    voco_ce,
    voco_ce_terms,
)
from ctvoco.voco.targets import overlap_targets, sample_random_centers

EPS = 1e-6
TOL = {"rtol": 1e-6, "atol": 1e-6}


# --------------------------------------------------------------------------- references
def ref_sim(a: torch.Tensor, b: torch.Tensor) -> float:
    cos = F.cosine_similarity(a.double(), b.double(), dim=0).item()
    return min(max(cos, 0.0), 1.0)


def ref_ce(y: list[list[float]], p: list[list[float]]) -> float:
    pos_num = y_sum = neg_num = neg_count = 0.0
    for y_row, p_row in zip(y, p, strict=True):
        for yv, pv in zip(y_row, p_row, strict=True):
            pos_num += yv * math.log(1.0 - abs(yv - pv) + EPS)
            y_sum += yv
            if yv == 0:
                neg_num += pv * pv
                neg_count += 1
    return -pos_num / (y_sum + EPS) + neg_num / (neg_count + EPS)


def ref_matrix(a: torch.Tensor, b: torch.Tensor) -> list[list[float]]:
    return [[ref_sim(a[k], b[j]) for j in range(b.shape[0])] for k in range(a.shape[0])]


def ref_intra(sr, tb, y) -> float:
    per_volume = [ref_ce(y[b].tolist(), ref_matrix(sr[b], tb[b])) for b in range(sr.shape[0])]
    return sum(per_volume) / len(per_volume)


def ref_inter(sr, sb, tr, tb, partners=None) -> float:
    batch = sr.shape[0]
    partners = [(b + 1) % batch for b in range(batch)] if partners is None else partners
    per_volume = []
    for b in range(batch):
        q = ref_matrix(tr[b], tb[partners[b]])
        p = ref_matrix(sr[b], sb[partners[b]])
        per_volume.append(ref_ce(q, p))
    return sum(per_volume) / batch


def ref_reg(sb) -> float:
    per_volume = []
    for b in range(sb.shape[0]):
        terms = []
        n = sb.shape[1]
        for j in range(n):
            for k in range(j + 1, n):
                cos = F.cosine_similarity(sb[b, j].double(), sb[b, k].double(), dim=0).item()
                terms.append(max(cos, 0.0) ** 2)
        per_volume.append(sum(terms) / len(terms) if terms else 0.0)
    return sum(per_volume) / len(per_volume)


def make_batch(batch=3, k=3, n=3, r=4, dim=16, seed=0, offset=0.5):
    """Random embeddings (with a shared offset so that many cosines are positive) + targets."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    def emb(count):
        return torch.randn(batch, count, dim, generator=gen) + offset

    centers = np.stack([sample_random_centers(rng, k, n, r) for _ in range(batch)])
    targets = overlap_targets(centers, n, r)
    return emb(k), emb(n * n), emb(k), emb(n * n), targets


def scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


# --------------------------------------------------------------------------- similarity
def test_similarity_values_and_shapes():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 3.0]])
    # cos: row0 = [1, -1 -> 0, 0]; row1 = [1/√2, 0, 1/√2]; zero vector -> 0 everywhere.
    expected = torch.tensor([[1.0, 0.0, 0.0], [2**-0.5, 0.0, 2**-0.5], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(similarity(a, b), expected)
    assert similarity(torch.randn(2, 5, 3, 8), torch.randn(2, 5, 4, 8)).shape == (2, 5, 3, 4)


def test_similarity_zero_vector_has_finite_gradient():
    a = torch.zeros(2, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    similarity(a, b).sum().backward()
    assert torch.isfinite(a.grad).all()
    assert torch.isfinite(b.grad).all()


def test_similarity_low_precision_computed_in_float32():
    a, b = torch.randn(3, 8), torch.randn(4, 8)
    out = similarity(a.bfloat16(), b.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, similarity(a, b), atol=2e-2, rtol=0)


@pytest.mark.parametrize(
    ("a_shape", "b_shape"), [((3,), (3, 4)), ((3, 4), (3, 5)), ((2, 3, 4), (3, 3, 4))]
)
def test_similarity_bad_shapes(a_shape, b_shape):
    with pytest.raises(ValueError, match="must be"):
        similarity(torch.randn(a_shape), torch.randn(b_shape))


# --------------------------------------------------------------------------- voco_ce
CE_CASES = [
    # y = [1, 0], p = [0.5, 0.2]
    # pos = -(1*log(1 - 0.5 + ε)) / (1 + ε); neg = 0.2² / (1 + ε)   (one zero target)
    (
        [1.0, 0.0],
        [0.5, 0.2],
        -math.log(0.5 + EPS) / (1 + EPS),
        0.04 / (1 + EPS),
    ),
    # y = [[0.5, 0.5], [0, 1]], p = [[0.25, 0.75], [0.1, 0.9]]; Σy = 2
    # pos = -(0.5*log(0.75+ε) + 0.5*log(0.75+ε) + 1*log(0.9+ε)) / (2 + ε)
    # neg = 0.1² / (1 + ε)
    (
        [[0.5, 0.5], [0.0, 1.0]],
        [[0.25, 0.75], [0.1, 0.9]],
        -(math.log(0.75 + EPS) + math.log(0.9 + EPS)) / (2 + EPS),
        0.01 / (1 + EPS),
    ),
    # A row with no overlap at all ([0, 0, 0]) only feeds the neg term:
    # y = [[1, 0, 0], [0, 0, 0]], p = [[1, 0.5, 0], [0.3, 0.4, 0]]
    # pos = -(1*log(1 + ε)) / (1 + ε); neg = (0.25 + 0 + 0.09 + 0.16 + 0) / (5 + ε)
    (
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[1.0, 0.5, 0.0], [0.3, 0.4, 0.0]],
        -math.log(1 + EPS) / (1 + EPS),
        0.5 / (5 + EPS),
    ),
    # All-zero targets: pos = 0 / (0 + ε) = 0; neg = mean p² = (0.01 + 0.04 + 0.09) / (3 + ε)
    ([0.0, 0.0, 0.0], [0.1, 0.2, 0.3], 0.0, 0.14 / (3 + EPS)),
    # y == p: pos = -Σy·log(1 + ε) / (Σy + ε) ≈ -ε; neg = 0 (p = y = 0 there)
    (
        [[0.25, 0.75, 0.0]],
        [[0.25, 0.75, 0.0]],
        -math.log(1 + EPS) * 1.0 / (1.0 + EPS),
        0.0,
    ),
]


@pytest.mark.parametrize(("y", "p", "pos", "neg"), CE_CASES)
def test_voco_ce_hand_computed(y, p, pos, neg):
    y_t, p_t = torch.tensor(y, dtype=torch.float64), torch.tensor(p, dtype=torch.float64)
    got_pos, got_neg = voco_ce_terms(y_t, p_t)
    torch.testing.assert_close(got_pos, scalar(pos), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_neg, scalar(neg), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(voco_ce(y_t, p_t), scalar(pos + neg), rtol=1e-12, atol=1e-12)
    assert torch.isfinite(voco_ce(y_t, p_t))


def test_voco_ce_perfect_prediction_is_near_zero():
    y = overlap_targets(sample_random_centers(np.random.default_rng(3), 4, 3, 8), 3, 8)
    assert abs(voco_ce(y, y.clone()).item()) < 2e-6


def test_voco_ce_shape_mismatch():
    with pytest.raises(ValueError, match="preds must have the shape of targets"):
        voco_ce(torch.zeros(2, 3), torch.zeros(3, 2))


# --------------------------------------------------------------------------- intra / inter / reg
@pytest.mark.parametrize(("batch", "k", "n", "dim", "seed"), [(3, 3, 3, 16, 0), (1, 2, 2, 8, 1)])
def test_intra_matches_reference(batch, k, n, dim, seed):
    sr, _, _, tb, y = make_batch(batch=batch, k=k, n=n, dim=dim, seed=seed)
    got = intra_volume_loss(sr, tb, y)
    torch.testing.assert_close(got.double(), scalar(ref_intra(sr, tb, y)), **TOL)


@pytest.mark.parametrize(
    ("batch", "offset", "seed"), [(4, 0.5, 0), (2, 0.0, 1), (3, 0.0, 2), (1, 0.3, 3)]
)
def test_inter_matches_reference(batch, offset, seed):
    sr, sb, tr, tb, _ = make_batch(batch=batch, offset=offset, seed=seed)
    got = inter_volume_loss(sr, sb, tr, tb)
    torch.testing.assert_close(got.double(), scalar(ref_inter(sr, sb, tr, tb)), **TOL)


def test_inter_single_volume_pairs_with_itself():
    sr, sb, tr, tb, _ = make_batch(batch=1, seed=5)
    expected = ref_inter(sr, sb, tr, tb, partners=[0])
    torch.testing.assert_close(inter_volume_loss(sr, sb, tr, tb).double(), scalar(expected), **TOL)
    self_pairs = torch.tensor([0])
    torch.testing.assert_close(
        inter_volume_loss(sr, sb, tr, tb, partner_index=self_pairs).double(),
        scalar(expected),
        **TOL,
    )


def test_inter_partner_index():
    sr, sb, tr, tb, _ = make_batch(batch=4, seed=6)
    roll = torch.tensor([1, 2, 3, 0])
    torch.testing.assert_close(
        inter_volume_loss(sr, sb, tr, tb, partner_index=roll), inter_volume_loss(sr, sb, tr, tb)
    )
    partners = [2, 2, 0, 3]
    got = inter_volume_loss(sr, sb, tr, tb, partner_index=torch.tensor(partners))
    torch.testing.assert_close(got.double(), scalar(ref_inter(sr, sb, tr, tb, partners)), **TOL)


def test_inter_partner_index_into_gathered_bases():
    # 2 local volumes, bases gathered from a global batch of 5 (e.g. across ranks)
    sr, _, tr, _, _ = make_batch(batch=2, seed=7)
    _, sb, _, tb, _ = make_batch(batch=5, seed=8)
    partners = [4, 0]
    got = inter_volume_loss(sr, sb, tr, tb, partner_index=torch.tensor(partners))
    torch.testing.assert_close(got.double(), scalar(ref_inter(sr, sb, tr, tb, partners)), **TOL)


@pytest.mark.parametrize(
    ("partner_index", "error", "match"),
    [
        (torch.tensor([1, 0, 2]), ValueError, "partner_index must be \\(B,\\) with B=2"),
        (torch.tensor([0, 5]), ValueError, "must lie in \\[0, 3\\)"),
        (torch.tensor([-1, 0]), ValueError, "must lie in"),
        (torch.tensor([0.0, 1.0]), ValueError, "integers"),
        ([0, 1], TypeError, "torch.Tensor"),
    ],
)
def test_inter_bad_partner_index(partner_index, error, match):
    sr, _, tr, _, _ = make_batch(batch=2)
    _, sb, _, tb, _ = make_batch(batch=3)
    with pytest.raises(error, match=match):
        inter_volume_loss(sr, sb, tr, tb, partner_index=partner_index)


@pytest.mark.parametrize(("batch", "n", "offset"), [(3, 3, 0.5), (2, 2, 0.0), (1, 4, 1.0)])
def test_reg_matches_reference(batch, n, offset):
    _, sb, _, _, _ = make_batch(batch=batch, n=n, offset=offset, seed=batch + n)
    got = base_regularization_loss(sb)
    torch.testing.assert_close(got.double(), scalar(ref_reg(sb)), **TOL)


def test_reg_single_base_is_zero():
    assert base_regularization_loss(torch.randn(2, 1, 8)).item() == 0.0


# Two base crops z_0, z_1 in 2D; only z_0 (first argument of cos(z_j, sg(z_l)), j < l) gets
# gradient. loss = cos² (one pair). d/dz_0 cos² = 2·cos·(ẑ_1 - cos·ẑ_0)/|z_0|.
REG_GRAD_CASES = [
    # z_0 = (1, 0), z_1 = (1, 1): cos = 1/√2, loss = 1/2;
    # ẑ_1 - cos·ẑ_0 = (1/√2 - 1/√2, 1/√2) = (0, 1/√2); grad = 2·(1/√2)·(0, 1/√2) = (0, 1).
    ([[1.0, 0.0], [1.0, 1.0]], 0.5, [[0.0, 1.0], [0.0, 0.0]]),
    # z_0 = (1, 1), z_1 = (1, 0): cos = 1/√2; ẑ_1 - cos·ẑ_0 = (1, 0) - (1/2, 1/2) = (1/2, -1/2);
    # grad = 2·(1/√2)·(1/2, -1/2)/√2 = (1/2, -1/2).
    ([[1.0, 1.0], [1.0, 0.0]], 0.5, [[0.5, -0.5], [0.0, 0.0]]),
    # z_0 = (1, 0), z_1 = (-1, 1): cos < 0, relu -> 0: no loss, no gradient.
    ([[1.0, 0.0], [-1.0, 1.0]], 0.0, [[0.0, 0.0], [0.0, 0.0]]),
]


@pytest.mark.parametrize(("z", "loss", "grad"), REG_GRAD_CASES)
def test_reg_stop_gradient_by_hand(z, loss, grad):
    sb = torch.tensor([z], dtype=torch.float64, requires_grad=True)
    out = base_regularization_loss(sb)
    out.backward()
    torch.testing.assert_close(out, scalar(loss))
    torch.testing.assert_close(sb.grad, torch.tensor([grad], dtype=torch.float64))


# --------------------------------------------------------------------------- identical crops
def aligned_batch(dim: int = 12):
    """Random crops that coincide with base cells; orthonormal base embeddings."""
    n, r = 3, 4
    centers = torch.tensor([[[6, 6], [2, 10]], [[10, 2], [2, 2]]])  # cells 4, 2 | 6, 0
    targets = overlap_targets(centers, n, r)  # one-hot (B=2, K=2, 9)
    base = torch.eye(dim)[: n * n].expand(2, -1, -1).clone()  # (2, 9, dim), orthonormal rows
    random = torch.stack([base[0, [4, 2]], base[1, [6, 0]]])  # student_random == its base cell
    return random, base, targets


def test_identical_crops_give_near_zero_losses():
    random, base, targets = aligned_batch()
    # similarity == targets exactly -> pos = -log(1 + ε)·K/(K + ε) ≈ -ε, neg = 0
    torch.testing.assert_close(similarity(random, base), targets)
    assert abs(intra_volume_loss(random, base, targets).item()) < 2e-6
    # teacher == student -> q == p for any pairing -> ≈ 0
    assert abs(inter_volume_loss(random, base, random, base).item()) < 2e-6
    # orthogonal base crops -> no regularisation
    assert base_regularization_loss(base).item() == 0.0
    # a wrong position is penalised
    shifted = random.roll(1, dims=1)
    assert intra_volume_loss(shifted, base, targets).item() > 1.0


def test_inter_with_student_equal_teacher_is_near_zero_for_random_inputs():
    sr, sb, _, _, _ = make_batch(batch=3, seed=11)
    assert abs(inter_volume_loss(sr, sb, sr.clone(), sb.clone()).item()) < 2e-6


# --------------------------------------------------------------------------- gradients
def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_(True)


def test_intra_gradients_only_reach_the_student():
    sr, _, _, tb, y = make_batch(seed=12)
    sr, tb = leaf(sr), leaf(tb)
    intra_volume_loss(sr, tb, y).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert tb.grad is None


def test_inter_gradients_only_reach_the_student():
    sr, sb, tr, tb = (leaf(x) for x in make_batch(seed=13)[:4])
    inter_volume_loss(sr, sb, tr, tb).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert sb.grad is not None and sb.grad.abs().sum() > 0
    assert tr.grad is None
    assert tb.grad is None


def test_voco_loss_gradients_only_reach_the_student():
    sr, sb, tr, tb, y = make_batch(seed=14)
    sr, sb, tr, tb = leaf(sr), leaf(sb), leaf(tr), leaf(tb)
    VoCoLoss()(sr, sb, tr, tb, y).total.backward()
    assert sr.grad is not None and sb.grad is not None
    assert tr.grad is None and tb.grad is None


@pytest.mark.parametrize("detach_teacher", [True, False])
def test_intra_detach_teacher_controls_teacher_gradient(detach_teacher):
    sr, _, _, tb, y = make_batch(seed=15)
    sr, tb = leaf(sr), leaf(tb)
    loss = intra_volume_loss(sr, tb, y, detach_teacher=detach_teacher)
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    if detach_teacher:
        assert tb.grad is None
    else:
        assert tb.grad is not None and tb.grad.abs().sum() > 0
    # the flag changes only the gradient, never the value
    torch.testing.assert_close(loss.detach(), intra_volume_loss(sr.detach(), tb.detach(), y))


def test_intra_detach_teacher_gradient_matches_swapped_roles():
    # with no detach, the gradient on teacher_base is the ordinary gradient of the loss
    sr, _, _, tb, y = make_batch(seed=16)
    tb = leaf(tb)
    intra_volume_loss(sr, tb, y, detach_teacher=False).backward()
    tb_ref = leaf(tb.detach())
    preds = similarity(sr, tb_ref)
    voco_sum = sum(voco_ce(y[b], preds[b]) for b in range(y.shape[0]))
    (voco_sum / y.shape[0]).backward()
    torch.testing.assert_close(tb.grad, tb_ref.grad)


def test_intra_detach_teacher_is_keyword_only():
    sr, _, _, tb, y = make_batch(seed=17)
    with pytest.raises(TypeError):
        intra_volume_loss(sr, tb, y, EPS, False)  # type: ignore[misc]


def test_voco_loss_detach_teacher_false_trains_teacher_base_through_intra_only():
    sr, sb, tr, tb, y = make_batch(seed=18)
    sr, sb, tr, tb = leaf(sr), leaf(sb), leaf(tr), leaf(tb)
    loss_fn = VoCoLoss(detach_teacher=False)
    assert loss_fn.detach_teacher is False
    assert "detach_teacher=False" in repr(loss_fn)
    out = loss_fn(sr, sb, tr, tb, y)
    out.total.backward()
    assert sr.grad is not None and sb.grad is not None
    assert tb.grad is not None and tb.grad.abs().sum() > 0
    assert tr.grad is None  # the inter target stays detached
    # tb's gradient comes from the intra term alone (inter detaches its target)
    tb_intra = leaf(tb.detach())
    intra_volume_loss(sr.detach(), tb_intra, y, detach_teacher=False).backward()
    torch.testing.assert_close(tb.grad, tb_intra.grad)
    # same value as the default
    torch.testing.assert_close(out.total.detach(), VoCoLoss()(sr, sb, tr, tb, y).total.detach())


def test_voco_loss_detach_teacher_false_intra_only_weighting():
    sr, sb, tr, tb, y = make_batch(seed=19)
    sr, sb, tb = leaf(sr), leaf(sb), leaf(tb)
    VoCoLoss(w_intra=0.0, detach_teacher=False)(sr, sb, tr, tb, y).total.backward()
    assert tb.grad is None  # no intra term: nothing reaches the teacher
    tb2 = leaf(tb.detach())
    VoCoLoss(detach_teacher=True)(sr, sb, tr, tb2, y).total.backward()
    assert tb2.grad is None


# --------------------------------------------------------------------------- shape errors
def test_shape_error_message_names_argument_and_shapes():
    with pytest.raises(ValueError) as info:
        intra_volume_loss(torch.randn(4, 2, 128), torch.randn(4, 9, 64), torch.rand(4, 2, 9))
    assert str(info.value) == "teacher_base must be (B, N, D) with B=4, D=128; got (4, 9, 64)"


B, K, N, D = 2, 3, 9, 8


def shapes(**override):
    base = {"sr": (B, K, D), "sb": (B, N, D), "tr": (B, K, D), "tb": (B, N, D), "y": (B, K, N)}
    base.update(override)
    return {name: torch.rand(shape) for name, shape in base.items()}


SHAPE_ERRORS = [
    # (which function, shape overrides, expected message fragment)
    ("intra", {"sr": (B, K)}, "student_random must be (B, K, D); got (2, 3)"),
    ("intra", {"tb": (B + 1, N, D)}, "teacher_base must be (B, N, D) with B=2, D=8"),
    ("intra", {"y": (B, K, N + 1)}, "targets must be (B, K, N) with B=2, K=3, N=9; got (2, 3, 10)"),
    ("intra", {"sr": (B, 0, D)}, "student_random must be (B, K, D) with every size > 0"),
    ("inter", {"tr": (B, K + 1, D)}, "teacher_random must be (B, K, D) with B=2, K=3, D=8"),
    ("inter", {"sb": (B, N, D + 1)}, "student_base must be (B, N, D) with B=2, D=8"),
    ("inter", {"tb": (B, N - 1, D)}, "teacher_base must be (B, N, D) with B=2, N=9, D=8"),
    ("reg", {"sb": (N, D)}, "student_base must be (B, N, D); got (9, 8)"),
    ("module", {"y": (B, K + 1, N)}, "targets must be (B, K, N) with B=2, K=3, N=9"),
    ("module", {"tb": (B, N, D, 1)}, "teacher_base must be (B, N, D)"),
]

CALLS = {
    "intra": lambda t: intra_volume_loss(t["sr"], t["tb"], t["y"]),
    "inter": lambda t: inter_volume_loss(t["sr"], t["sb"], t["tr"], t["tb"]),
    "reg": lambda t: base_regularization_loss(t["sb"]),
    "module": lambda t: VoCoLoss()(t["sr"], t["sb"], t["tr"], t["tb"], t["y"]),
}


@pytest.mark.parametrize(("which", "override", "message"), SHAPE_ERRORS)
def test_shape_errors(which, override, message):
    with pytest.raises(ValueError) as info:
        CALLS[which](shapes(**override))
    assert message in str(info.value)


def test_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match=r"student_base must be a torch\.Tensor"):
        base_regularization_loss(np.zeros((1, 2, 3)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- VoCoLoss
WEIGHT_CASES = [(1.0, 1.0, 1.0), (0.5, 2.0, 0.3), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0, 0, 2)]


@pytest.mark.parametrize(("w_intra", "w_inter", "w_reg"), WEIGHT_CASES)
def test_voco_loss_total_is_weighted_sum(w_intra, w_inter, w_reg):
    sr, sb, tr, tb, y = make_batch(seed=20)
    out = VoCoLoss(w_intra, w_inter, w_reg)(sr, sb, tr, tb, y)
    terms = {
        "intra": intra_volume_loss(sr, tb, y),
        "inter": inter_volume_loss(sr, sb, tr, tb),
        "reg": base_regularization_loss(sb),
    }
    for name, weight in (("intra", w_intra), ("inter", w_inter), ("reg", w_reg)):
        expected = terms[name] if weight > 0 else torch.zeros(())
        torch.testing.assert_close(getattr(out, name), expected)
    expected_total = w_intra * out.intra + w_inter * out.inter + w_reg * out.reg
    torch.testing.assert_close(out.total, expected_total)
    assert all(t.ndim == 0 for t in out)


@pytest.mark.parametrize("term", ["intra", "inter", "reg"])
def test_voco_loss_zero_weight_skips_computation(term, monkeypatch):
    name = {
        "intra": "intra_volume_loss",
        "inter": "inter_volume_loss",
        "reg": "base_regularization_loss",
    }[term]

    def fail(*args, **kwargs):
        raise AssertionError(f"{name} must not be called")

    monkeypatch.setattr(losses_module, name, fail)
    weights = {"w_intra": 1.0, "w_inter": 1.0, "w_reg": 1.0, f"w_{term}": 0.0}
    out = VoCoLoss(**weights)(*make_batch(seed=21))
    assert getattr(out, term).item() == 0.0


def test_voco_loss_partner_index_passthrough():
    sr, sb, tr, tb, y = make_batch(batch=3, seed=22)
    partners = torch.tensor([0, 0, 1])
    out = VoCoLoss()(sr, sb, tr, tb, y, partner_index=partners)
    torch.testing.assert_close(out.inter, inter_volume_loss(sr, sb, tr, tb, partners))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"w_intra": -1.0}, "w_intra must be a finite number >= 0"),
        ({"w_inter": float("nan")}, "w_inter must be"),
        ({"w_reg": float("inf")}, "w_reg must be"),
        ({"w_reg": "1"}, "w_reg must be"),
        ({"w_intra": 0, "w_inter": 0, "w_reg": 0}, "at least one"),
        ({"eps": 0.0}, "eps must be > 0"),
    ],
)
def test_voco_loss_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VoCoLoss(**kwargs)


def test_voco_loss_low_precision_inputs():
    sr, sb, tr, tb, y = make_batch(seed=23)
    half = VoCoLoss()(sr.bfloat16(), sb.bfloat16(), tr.bfloat16(), tb.bfloat16(), y)
    full = VoCoLoss()(sr, sb, tr, tb, y)
    assert half.total.dtype == torch.float32
    torch.testing.assert_close(half.total, full.total, atol=5e-2, rtol=0)
