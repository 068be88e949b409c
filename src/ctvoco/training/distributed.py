"""Collectives that keep autograd (for cross-rank VoCo pairing)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, gradients flowing back to each rank.

    Args:
        tensor: ``(B, ...)``, the same shape on every rank.

    Returns:
        ``(world * B, ...)`` in rank order; the input itself when not distributed.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)
