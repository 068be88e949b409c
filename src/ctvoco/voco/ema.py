"""Momentum (EMA) teacher updates and the cosine momentum schedule.

Reference: Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (schedule); Wu, Zhuang,
Xu, Chen, "VoCo", CVPR 2024; 2D-VoCo, arXiv 2601.14593 (docs/algorithms.md §2.2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["cosine_momentum", "update_momentum"]


def _check_unit_interval(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value!r}")
    return float(value)


def _paired(
    kind: str, student: dict, teacher: dict
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    if student.keys() != teacher.keys():
        missing = sorted(student.keys() - teacher.keys())[:5]
        unexpected = sorted(teacher.keys() - student.keys())[:5]
        raise ValueError(
            f"student and teacher {kind} differ: missing in teacher {missing}, "
            f"only in teacher {unexpected}"
        )
    pairs = []
    for name, s in student.items():
        t = teacher[name]
        if s.shape != t.shape:
            raise ValueError(
                f"{kind[:-1]} {name!r} has shape {tuple(s.shape)} in student and "
                f"{tuple(t.shape)} in teacher"
            )
        pairs.append((name, s, t))
    return pairs


@torch.no_grad()
def update_momentum(student: nn.Module, teacher: nn.Module, m: float) -> None:
    """EMA update of ``teacher`` towards ``student``, in place.

    Parameters: ``θ_t ← m·θ_t + (1 - m)·θ_s``. Buffers: floating-point buffers (BatchNorm
    ``running_mean`` / ``running_var``) get the same EMA, so the teacher's statistics follow
    the student's as its weights do; non-floating buffers (``num_batches_tracked`` and other
    integer/bool buffers) cannot be averaged and are copied from the student. ``m = 0`` copies
    the student exactly, ``m = 1`` leaves the teacher unchanged.

    Args:
        student: Module trained by gradient.
        teacher: Module with the same parameter and buffer names and shapes.
        m: Momentum in ``[0, 1]``.

    Raises:
        ValueError: If ``m`` is outside ``[0, 1]`` or the modules do not match.
    """
    m = _check_unit_interval("m", m)
    params = _paired(
        "parameters", dict(student.named_parameters()), dict(teacher.named_parameters())
    )
    buffers = _paired("buffers", dict(student.named_buffers()), dict(teacher.named_buffers()))
    floats = [(s, t) for _, s, t in params] + [
        (s, t) for _, s, t in buffers if t.is_floating_point()
    ]
    targets = [t for _, t in floats]
    sources = [s.to(device=t.device, dtype=t.dtype) for s, t in floats]
    if targets:
        # One fused multi-tensor update instead of a Python loop over every tensor.
        torch._foreach_lerp_(targets, sources, 1.0 - m)
    for _, s, t in buffers:
        if not t.is_floating_point():
            t.copy_(s.to(device=t.device, dtype=t.dtype))


def cosine_momentum(step: int, max_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """BYOL cosine momentum schedule from ``base`` (step 0) to ``final`` (``max_steps``).

    ``m = final - (final - base)·(cos(π·step/max_steps) + 1)/2`` with ``step`` clamped to
    ``[0, max_steps]``.

    Args:
        step: Current optimiser step.
        max_steps: Length of the schedule, ``> 0``.
        base: Momentum at step 0, in ``[0, 1]``.
        final: Momentum at ``max_steps``, in ``[0, 1]``.

    Returns:
        The momentum ``m``.

    Raises:
        ValueError: On a non-integer ``step`` / ``max_steps``, ``max_steps <= 0``, or a momentum
            outside ``[0, 1]``.
    """
    for name, value in (("step", step), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer; got {value!r}")
    if max_steps <= 0:
        raise ValueError(f"max_steps must be > 0; got {max_steps}")
    base = _check_unit_interval("base", base)
    final = _check_unit_interval("final", final)
    progress = min(max(step, 0), max_steps) / max_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
