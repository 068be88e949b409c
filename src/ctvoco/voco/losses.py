"""VoCo losses: position prediction (intra), cross-volume consistency (inter), base separation.

Every term is a documented pure function; :class:`VoCoLoss` combines them with weights.
Low-precision inputs (float16 / bfloat16, e.g. under AMP) are computed in float32: the
``log(1 - |y - p| + eps)`` term with ``eps = 1e-6`` is meaningless in half precision.

Reference: Wu, Zhuang, Xu, Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning
Framework for 3D Medical Image Analysis", CVPR 2024; 2D-VoCo, arXiv 2601.14593. The math:
docs/algorithms.md §2.3.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctvoco.training.distributed import distributed_rank_and_world, gather_partner_bases

__all__ = [
    "VoCoLoss",
    "VoCoLossOutput",
    "base_regularization_loss",
    "inter_volume_loss",
    "intra_volume_loss",
    "similarity",
    "symmetric_intra_volume_loss",
    "voco_ce",
    "voco_ce_terms",
]

DEFAULT_EPS = 1e-6
"""The ``ε`` of the VoCo loss (docs/algorithms.md §2.3)."""


# --------------------------------------------------------------------------- helpers
def _check_shape(name: str, x: object, dims: str, **known: int) -> dict[str, int]:
    """Check ``x`` is a tensor with named ``dims`` (e.g. ``"B K D"``) and the ``known`` sizes.

    Returns:
        The size of every named dim.

    Raises:
        TypeError: If ``x`` is not a tensor.
        ValueError: Naming ``name``, the expected pattern and the actual shape.
    """
    labels = dims.split()
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    pattern = f"({', '.join(labels)})"
    fixed = ", ".join(f"{k}={v}" for k, v in known.items())
    expected = f"{pattern} with {fixed}" if fixed else pattern
    ok = x.ndim == len(labels) and all(x.shape[labels.index(k)] == v for k, v in known.items())
    if not ok:
        raise ValueError(f"{name} must be {expected}; got {tuple(x.shape)}")
    if any(size == 0 for size in x.shape):
        raise ValueError(f"{name} must be {pattern} with every size > 0; got {tuple(x.shape)}")
    return dict(zip(labels, x.shape, strict=True))


def _at_least_float32(x: Tensor) -> Tensor:
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def _voco_ce_terms_per_volume(targets: Tensor, preds: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """VoCo ``pos`` and ``neg`` summed over the last two dims: ``(..., K, N)`` → ``(...)``."""
    targets = _at_least_float32(targets)
    preds = _at_least_float32(preds)
    dims = (-2, -1)
    pos = -(targets * torch.log(1.0 - (targets - preds).abs() + eps)).sum(dims)
    pos = pos / (targets.sum(dims) + eps)
    empty = (targets == 0).to(preds.dtype)
    neg = (empty * preds.square()).sum(dims) / (empty.sum(dims) + eps)
    return pos, neg


# --------------------------------------------------------------------------- pure functions
def similarity(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pairwise cosine similarity clamped to ``[0, 1]``: ``clamp(cos(a_i, b_j), 0, 1)``.

    Vectors are L2-normalised with ``max(||x||, eps)`` in the denominator, so a zero vector has
    similarity 0 with everything (and finite gradients).

    Args:
        a: Tensor of shape ``(..., M, D)``.
        b: Tensor of shape ``(..., N, D)``, same leading dims ``...`` and ``D`` as ``a``.
        eps: Floor of the norm in the normalisation.

    Returns:
        Tensor of shape ``(..., M, N)``; float32 when the inputs are float16 / bfloat16.

    Raises:
        ValueError: If the shapes are incompatible.
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("a and b must be torch.Tensor")
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(
            f"a and b must be (..., M, D) and (..., N, D); got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"b must be (..., N, D) with ...={tuple(a.shape[:-2])}, D={a.shape[-1]}; "
            f"got {tuple(b.shape)}"
        )
    a_unit = F.normalize(_at_least_float32(a), dim=-1, eps=eps)
    b_unit = F.normalize(_at_least_float32(b), dim=-1, eps=eps)
    return torch.matmul(a_unit, b_unit.transpose(-1, -2)).clamp(0.0, 1.0)


def voco_ce_terms(
    targets: Tensor, preds: Tensor, eps: float = DEFAULT_EPS
) -> tuple[Tensor, Tensor]:
    """The two terms of the VoCo loss, summed over ALL elements of the given tensors.

    ``pos = -Σ y·log(1 - |y - p| + ε) / (Σ y + ε)`` pulls predictions towards non-zero targets;
    ``neg = Σ_{y==0} p² / (#{y==0} + ε)`` pushes predictions of zero-overlap pairs to 0.

    Args:
        targets: Target overlaps ``y`` in ``[0, 1]``, any shape.
        preds: Predictions ``p`` in ``[0, 1]``, same shape as ``targets``.
        eps: ``ε``.

    Returns:
        ``(pos, neg)``, two scalar tensors.

    Raises:
        ValueError: If the shapes differ.
    """
    if not isinstance(targets, Tensor) or not isinstance(preds, Tensor):
        raise TypeError("targets and preds must be torch.Tensor")
    if targets.shape != preds.shape:
        raise ValueError(
            f"preds must have the shape of targets {tuple(targets.shape)}; got {tuple(preds.shape)}"
        )
    pos, neg = _voco_ce_terms_per_volume(targets.reshape(1, -1), preds.reshape(1, -1), eps)
    return pos.squeeze(0), neg.squeeze(0)


def voco_ce(targets: Tensor, preds: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """VoCo loss ``L(y, p) = pos + neg`` over ALL elements of the given tensors.

    The sums run over every element, so call it on one volume's ``(K, N)`` matrix; the mean
    over volumes is done by the callers (:func:`intra_volume_loss`, :func:`inter_volume_loss`).
    See :func:`voco_ce_terms` for the terms.

    Args:
        targets: Target overlaps ``y``, any shape, e.g. ``(K, N)``.
        preds: Predictions ``p``, same shape.
        eps: ``ε``.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: If the shapes differ.

    Reference: Wu et al., "VoCo", CVPR 2024.
    """
    pos, neg = voco_ce_terms(targets, preds, eps)
    return pos + neg


def intra_volume_loss(
    student_random: Tensor,
    teacher_base: Tensor,
    targets: Tensor,
    eps: float = DEFAULT_EPS,
    *,
    detach_teacher: bool = True,
) -> Tensor:
    """Position prediction: student random crops vs teacher base crops of the same volume.

    Per volume ``b``: ``L(y_b, similarity(student_random_b, teacher_base_b))``; mean over ``b``.
    By default ``teacher_base`` is detached (a constant target side), whatever its
    ``requires_grad``. With ``detach_teacher=False`` the gradient also flows into
    ``teacher_base``: this reproduces the research code, where the teacher projection head is
    trained by gradient through this loss (``teacher_head: trained``, docs/algorithms.md §2.2).

    Args:
        student_random: Student embeddings of the random crops, ``(B, K, D)``.
        teacher_base: Teacher embeddings of the base crops, ``(B, N, D)``.
        targets: Overlap targets, ``(B, K, N)`` (see :func:`~ctvoco.voco.targets.overlap_targets`).
        eps: ``ε`` of the VoCo loss.
        detach_teacher: Detach ``teacher_base`` (default). ``False`` lets gradient reach it.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: If a shape does not match.
    """
    size = _check_shape("student_random", student_random, "B K D")
    size |= _check_shape("teacher_base", teacher_base, "B N D", B=size["B"], D=size["D"])
    _check_shape("targets", targets, "B K N", B=size["B"], K=size["K"], N=size["N"])
    if detach_teacher:
        teacher_base = teacher_base.detach()
    preds = similarity(student_random, teacher_base)
    pos, neg = _voco_ce_terms_per_volume(targets, preds, eps)
    return (pos + neg).mean()


def symmetric_intra_volume_loss(
    student_random: Tensor,
    student_base: Tensor,
    teacher_random: Tensor,
    teacher_base: Tensor,
    targets: Tensor,
    eps: float = DEFAULT_EPS,
    *,
    detach_teacher: bool = True,
) -> Tensor:
    """Position prediction from both sides: the intra-volume term of the research V1 head.

    Per volume ``b`` the prediction is the mean of two similarity matrices,
    ``p_b = (similarity(student_random_b, teacher_base_b) +
    similarity(teacher_random_b, student_base_b)) / 2``, and the loss is ``L(y_b, p_b)``;
    mean over ``b``. Unlike :func:`intra_volume_loss`, the student's base crops are trained
    by this term too.

    Each similarity is clamped to ``[0, 1]`` before the mean. The research code's V1 head
    averaged unclamped cosines; an average below ``y - 1`` makes ``log(1 - |y - p| + eps)``
    the logarithm of a negative number (a NaN loss), which the clamp rules out. Where both
    cosines are non-negative the two agree.

    Args:
        student_random: ``(B, K, D)``.
        student_base: ``(B, N, D)``.
        teacher_random: ``(B, K, D)``.
        teacher_base: ``(B, N, D)``.
        targets: Overlap targets, ``(B, K, N)``.
        eps: ``ε`` of the VoCo loss.
        detach_teacher: Detach both teacher inputs (default). ``False`` lets gradient reach
            them (the research code trains its teacher head by gradient, ``teacher_head: trained``).

    Returns:
        Scalar tensor.

    Raises:
        ValueError: If a shape does not match.
    """
    size = _check_shape("student_random", student_random, "B K D")
    batch, dim = size["B"], size["D"]
    _check_shape("teacher_random", teacher_random, "B K D", B=batch, K=size["K"], D=dim)
    size |= _check_shape("student_base", student_base, "B N D", B=batch, D=dim)
    _check_shape("teacher_base", teacher_base, "B N D", B=batch, N=size["N"], D=dim)
    _check_shape("targets", targets, "B K N", B=batch, K=size["K"], N=size["N"])
    if detach_teacher:
        teacher_random, teacher_base = teacher_random.detach(), teacher_base.detach()
    preds = 0.5 * (
        similarity(student_random, teacher_base) + similarity(teacher_random, student_base)
    )
    pos, neg = _voco_ce_terms_per_volume(targets, preds, eps)
    return (pos + neg).mean()


def _default_partners(batch_size: int, device: torch.device) -> Tensor:
    return torch.arange(1, batch_size + 1, device=device) % batch_size


def _check_partner_index(partner_index: object, batch_size: int, num_bases: int) -> Tensor:
    if not isinstance(partner_index, Tensor):
        raise TypeError(f"partner_index must be a torch.Tensor; got {type(partner_index).__name__}")
    if partner_index.shape != (batch_size,):
        raise ValueError(
            f"partner_index must be (B,) with B={batch_size}; got {tuple(partner_index.shape)}"
        )
    if partner_index.is_floating_point() or partner_index.dtype == torch.bool:
        raise ValueError(f"partner_index must hold integers; got dtype {partner_index.dtype}")
    if ((partner_index < 0) | (partner_index >= num_bases)).any():
        raise ValueError(
            f"partner_index values must lie in [0, {num_bases}); got {partner_index.tolist()}"
        )
    return partner_index.long()


def inter_volume_loss(
    student_random: Tensor,
    student_base: Tensor,
    teacher_random: Tensor,
    teacher_base: Tensor,
    partner_index: Tensor | None = None,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """Cross-volume consistency: random crops of ``b`` vs base crops of a partner ``b'``.

    The target ``q = similarity(teacher_random_b, teacher_base_b')`` is computed from detached
    teacher embeddings; the prediction is ``p = similarity(student_random_b, student_base_b')``.
    The loss is ``L(q, p)`` per volume, mean over ``b``. By default ``b' = (b + 1) mod B``
    (``B = 1`` pairs a volume with itself).

    Args:
        student_random: ``(B, K, D)``.
        student_base: ``(B, N, D)``, or ``(M, N, D)`` when ``partner_index`` is given.
        teacher_random: ``(B, K, D)``.
        teacher_base: Same shape as ``student_base``.
        partner_index: Optional ``(B,)`` integer tensor: the base row ``b'`` each volume is
            paired with, values in ``[0, M)``. Lets a caller pair across ranks by passing
            gathered base embeddings (``M`` = global batch). ``None`` means the roll above.
        eps: ``ε`` of the VoCo loss.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: If a shape or ``partner_index`` does not match.
    """
    size = _check_shape("student_random", student_random, "B K D")
    batch, dim = size["B"], size["D"]
    _check_shape("teacher_random", teacher_random, "B K D", B=batch, K=size["K"], D=dim)
    if partner_index is None:
        size |= _check_shape("student_base", student_base, "B N D", B=batch, D=dim)
        _check_shape("teacher_base", teacher_base, "B N D", B=batch, N=size["N"], D=dim)
        partners = _default_partners(batch, student_base.device)
    else:
        size |= _check_shape("student_base", student_base, "M N D", D=dim)
        _check_shape("teacher_base", teacher_base, "M N D", M=size["M"], N=size["N"], D=dim)
        partners = _check_partner_index(partner_index, batch, size["M"]).to(student_base.device)
    q = similarity(teacher_random.detach(), teacher_base.detach()[partners])
    p = similarity(student_random, student_base[partners])
    pos, neg = _voco_ce_terms_per_volume(q, p, eps)
    return (pos + neg).mean()


def base_regularization_loss(student_base: Tensor, eps: float = 1e-8) -> Tensor:
    """Keep the base crops of a volume apart: ``mean_{j<l} relu(cos(z_j, sg(z_l)))²``.

    ``sg`` is a stop-gradient on the second argument, so for a pair ``(j, l)`` with ``j < l``
    only ``z_j`` receives gradient (the last base crop gets none from this term). Mean over
    the ``N(N-1)/2`` pairs of each volume, then over volumes. ``N = 1`` gives 0.

    Args:
        student_base: Student embeddings of the base crops, ``(B, N, D)``.
        eps: Floor of the norm in the normalisation.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: If the shape is not ``(B, N, D)``.
    """
    size = _check_shape("student_base", student_base, "B N D")
    num = size["N"]
    z = _at_least_float32(student_base)
    if num == 1:
        return z.new_zeros(())
    unit = F.normalize(z, dim=-1, eps=eps)
    cos = torch.matmul(unit, unit.detach().transpose(-1, -2))  # (B, N, N), cos[b, j, l]
    rows, cols = torch.triu_indices(num, num, offset=1, device=z.device)
    pairs = cos[:, rows, cols]  # (B, N(N-1)/2), j < l
    return F.relu(pairs).square().mean(dim=-1).mean()


# --------------------------------------------------------------------------- module
class VoCoLossOutput(NamedTuple):
    """The weighted total and the three unweighted terms (scalar tensors)."""

    total: Tensor
    intra: Tensor
    inter: Tensor
    reg: Tensor


class VoCoLoss(nn.Module):
    """2D-VoCo pretraining loss: ``w_intra*intra + w_inter*inter + w_reg*reg``.

    A term whose weight is 0 is not computed and reported as a zero tensor (ablations).

    Args:
        w_intra: Weight of the intra term (:func:`intra_volume_loss`), ``>= 0``.
        w_inter: Weight of :func:`inter_volume_loss`, ``>= 0``.
        w_reg: Weight of :func:`base_regularization_loss`, ``>= 0``.
        eps: ``ε`` of the VoCo loss.
        detach_teacher: Passed to the intra term: ``True`` (default) detaches the teacher
            embeddings in it; ``False`` lets the intra term's gradient reach them (research
            code, ``teacher_head: trained``). The inter term's target is detached either way, and
            the reg term only sees student embeddings.
        intra_symmetric: Use :func:`symmetric_intra_volume_loss` for the intra term (the
            research code's V1 head) instead of :func:`intra_volume_loss`.
        gather_distributed: Under DDP, pair each volume's random crops with the base crops
            of the global batch gathered from every rank: volume ``b`` of rank ``r`` pairs
            with global volume ``(r*B + b + 1) mod (W*B)``, so at the batch boundary the
            partner is the next rank's first volume. The student's gathered bases carry
            gradients back to the rank they came from. Without a process group, or with
            one process, the pairing stays within the batch.

    Raises:
        ValueError: If a weight is negative or not finite, all weights are 0, or ``eps <= 0``.

    Reference: Wu et al., "VoCo", CVPR 2024; 2D-VoCo, arXiv 2601.14593.
    """

    def __init__(
        self,
        w_intra: float = 1.0,
        w_inter: float = 1.0,
        w_reg: float = 1.0,
        eps: float = DEFAULT_EPS,
        detach_teacher: bool = True,
        intra_symmetric: bool = False,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        weights = {"w_intra": w_intra, "w_inter": w_inter, "w_reg": w_reg}
        for name, value in weights.items():
            if not isinstance(value, (int, float)) or not (0.0 <= float(value) < float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if all(float(v) == 0.0 for v in weights.values()):
            raise ValueError("at least one of w_intra, w_inter, w_reg must be > 0")
        if not eps > 0:
            raise ValueError(f"eps must be > 0; got {eps!r}")
        self.w_intra = float(w_intra)
        self.w_inter = float(w_inter)
        self.w_reg = float(w_reg)
        self.eps = float(eps)
        self.detach_teacher = bool(detach_teacher)
        self.intra_symmetric = bool(intra_symmetric)
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:
        return (
            f"w_intra={self.w_intra}, w_inter={self.w_inter}, w_reg={self.w_reg}, "
            f"eps={self.eps}, detach_teacher={self.detach_teacher}, "
            f"intra_symmetric={self.intra_symmetric}, "
            f"gather_distributed={self.gather_distributed}"
        )

    def forward(
        self,
        student_random: Tensor,
        student_base: Tensor,
        teacher_random: Tensor,
        teacher_base: Tensor,
        targets: Tensor,
        partner_index: Tensor | None = None,
    ) -> VoCoLossOutput:
        """Compute the loss.

        Args:
            student_random: ``(B, K, D)``.
            student_base: ``(B, N, D)``.
            teacher_random: ``(B, K, D)``.
            teacher_base: ``(B, N, D)``.
            targets: ``(B, K, N)`` overlap targets.
            partner_index: Optional ``(B,)`` partner of each volume within this batch for the
                inter term (see :func:`inter_volume_loss`); not with ``gather_distributed``
                across ranks, which pairs by rank.

        Returns:
            :class:`VoCoLossOutput` with scalar ``total``, ``intra``, ``inter``, ``reg``.
        """
        size = _check_shape("student_random", student_random, "B K D")
        batch, dim = size["B"], size["D"]
        _check_shape("teacher_random", teacher_random, "B K D", B=batch, K=size["K"], D=dim)
        size |= _check_shape("student_base", student_base, "B N D", B=batch, D=dim)
        _check_shape("teacher_base", teacher_base, "B N D", B=batch, N=size["N"], D=dim)
        _check_shape("targets", targets, "B K N", B=batch, K=size["K"], N=size["N"])

        zero = torch.zeros((), device=student_random.device)
        intra = inter = reg = zero
        crops = (student_random, student_base, teacher_random, teacher_base)
        detach = self.detach_teacher
        if self.w_intra > 0 and self.intra_symmetric:
            intra = symmetric_intra_volume_loss(*crops, targets, self.eps, detach_teacher=detach)
        elif self.w_intra > 0:
            intra = intra_volume_loss(
                student_random, teacher_base, targets, self.eps, detach_teacher=detach
            )
        if self.w_inter > 0:
            inter = self._inter(*crops, partner_index)
        if self.w_reg > 0:
            reg = base_regularization_loss(student_base)
        total = self.w_intra * intra + self.w_inter * inter + self.w_reg * reg
        return VoCoLossOutput(total=total, intra=intra, inter=inter, reg=reg)

    def _inter(
        self,
        student_random: Tensor,
        student_base: Tensor,
        teacher_random: Tensor,
        teacher_base: Tensor,
        partner_index: Tensor | None,
    ) -> Tensor:
        """The inter term, paired within the batch or across ranks (``gather_distributed``)."""
        rank, world = distributed_rank_and_world()
        if not self.gather_distributed or world <= 1:
            return inter_volume_loss(
                student_random, student_base, teacher_random, teacher_base, partner_index, self.eps
            )
        if partner_index is not None:
            raise ValueError("partner_index cannot be given with gather_distributed across ranks")
        bases, teachers, partners = gather_partner_bases(student_base, teacher_base, rank, world)
        return inter_volume_loss(
            student_random, bases, teacher_random, teachers, partners, self.eps
        )
