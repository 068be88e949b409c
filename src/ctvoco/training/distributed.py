"""Collectives that keep autograd (for cross-rank VoCo pairing)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient and returns this rank's slice.

    ``torch.distributed.nn.functional.all_gather`` did this but is deprecated; its suggested
    replacement is a private API, hence this small public-API version.
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.size = dist.get_rank(), tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, gradients flowing back to each rank.

    Args:
        tensor: ``(B, ...)``, the same shape on every rank.

    Returns:
        ``(world * B, ...)`` in rank order; the input itself when not distributed.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_partner_bases(
    student_base: Tensor, teacher_base: Tensor, rank: int, world: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Base embeddings of the global batch and each local volume's partner among them.

    Volume ``b`` of rank ``r`` pairs with global volume ``(r*B + b + 1) mod (W*B)``, so at
    the batch boundary the partner is the next rank's first volume.

    Args:
        student_base: ``(B, N, D)``; gathered with gradient (back to the rank it came from).
        teacher_base: ``(B, N, D)``; gathered detached.
        rank: This process's rank ``r``.
        world: The number of ranks ``W``.

    Returns:
        ``(W*B, N, D)`` student and teacher bases and the ``(B,)`` partner rows.
    """
    local = student_base.shape[0]
    positions = torch.arange(local, device=student_base.device)
    partners = (rank * local + positions + 1) % (world * local)
    return gather_with_grad(student_base), gather_with_grad(teacher_base.detach()), partners


def distributed_rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()
