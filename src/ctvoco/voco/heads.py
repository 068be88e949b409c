"""Projection head of 2D-VoCo pretraining.

Reference: Wu, Zhuang, Xu, Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning
Framework for 3D Medical Image Analysis", CVPR 2024; 2D-VoCo, arXiv 2601.14593. The math:
docs/algorithms.md §2.2.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from ctvoco.errors import look_up_option

__all__ = ["DROPOUT_PLACES", "HEAD_NORMS", "ProjectionHead", "SliceDropout"]

HEAD_NORMS: tuple[str, ...] = ("batch", "per_slot")
"""Accepted values of ``ProjectionHead(norm=...)``."""

DROPOUT_PLACES: tuple[str, ...] = ("crop", "slice")
"""Accepted values of ``SliceDropout(at=...)``."""


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def _batch_stats_norm(num_features: int) -> nn.BatchNorm1d:
    """``BatchNorm1d`` without affine parameters or running statistics (batch stats always)."""
    return nn.BatchNorm1d(num_features, affine=False, track_running_stats=False)


class ProjectionHead(nn.Module):
    """MLP projection head ``Linear–BN–ReLU–Linear–BN–ReLU–Linear`` (2D-VoCo).

    Layers: ``Linear(in_dim, hidden_dim)`` – BN – ReLU – ``Linear(hidden_dim, hidden_dim)`` –
    BN – ReLU – ``Linear(hidden_dim, out_dim)``, as in the research code (docs/algorithms.md
    §2.2; 2048 wide by default). There is no normalisation after the last ``Linear``.

    Both BatchNorms are ``BatchNorm1d(..., affine=False, track_running_stats=False)``: they
    have no learnable parameters and no buffers, and they normalise with the statistics of the
    current batch in training AND evaluation mode. The embeddings therefore do not depend on
    ``train()`` / ``eval()``; they do depend on the other rows of the batch.

    Two normalisation modes:

    * ``norm="batch"`` (default, correct): every BatchNorm is ``BatchNorm1d(hidden_dim)`` and
      sees a 2D ``(N, C)`` input in which all leading dims are merged. Each feature is
      normalised over every crop embedding of the batch. Nothing depends on how many crops a
      volume has or in which order they come, and any input shape ``(..., in_dim)`` works as
      long as it holds at least 2 embeddings: with batch statistics, PyTorch raises
      ``ValueError("Expected more than 1 value per channel when training ...")`` for a single
      row, in eval mode too. The VoCo caller always passes ``B * (K + n²) >= 2`` rows, so a
      ``(1, K + n², in_dim)`` input (one volume) works.
    * ``norm="per_slot"`` reproduces the research code: the input ``(B, T, C)`` is fed to
      ``BatchNorm1d`` unchanged, and ``BatchNorm1d`` treats dim 1 as the channel. The layers are
      therefore ``BatchNorm1d(T)`` (``T = num_slots``, e.g. ``K + n²``, same flags as above) and
      normalise each *slot* over ``(B, C)``: every crop position gets its own mean/variance
      taken across its feature vector, instead of each feature being standardised across
      crops. This ties the head to a fixed number and order of crops and mixes the scale of
      unrelated features within one embedding. Use it only to reproduce published numbers
      (``head_norm: per_slot``).

    Args:
        in_dim: Input feature size ``d`` (the pooled backbone features).
        hidden_dim: Width of the two hidden layers.
        out_dim: Output embedding size.
        norm: ``"batch"`` or ``"per_slot"`` (see above).
        num_slots: Number of slots ``T`` per sample; required for ``norm="per_slot"``, ignored for
            ``norm="batch"``.

    Shapes:
        ``"batch"``: input ``(..., in_dim)`` → output ``(..., out_dim)``.
        ``"per_slot"``: input ``(B, T, in_dim)`` with ``T = num_slots`` → ``(B, T, out_dim)``.

    Raises:
        ValueError: On a bad size, or a missing ``num_slots`` for ``per_slot``.
        UserError: On an unknown ``norm`` (with the closest accepted one).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 2048,
        norm: Literal["batch", "per_slot"] = "batch",
        num_slots: int | None = None,
    ) -> None:
        super().__init__()
        self.in_dim = _check_positive_int("in_dim", in_dim)
        self.hidden_dim = _check_positive_int("hidden_dim", hidden_dim)
        self.out_dim = _check_positive_int("out_dim", out_dim)
        self.norm = look_up_option("norm", norm, HEAD_NORMS)
        if norm == "per_slot":
            if num_slots is None:
                raise ValueError("norm='per_slot' needs num_slots (the T of the (B, T, C) input)")
            self.num_slots: int | None = _check_positive_int("num_slots", num_slots)
            bn_features = self.num_slots
        else:
            self.num_slots = None
            bn_features = hidden_dim
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            _batch_stats_norm(bn_features),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            _batch_stats_norm(bn_features),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def extra_repr(self) -> str:
        slots = f", num_slots={self.num_slots}" if self.num_slots is not None else ""
        return f"norm={self.norm!r}{slots}"

    def forward(self, x: Tensor) -> Tensor:
        """Project features.

        Args:
            x: ``(..., in_dim)`` for ``"batch"``; ``(B, num_slots, in_dim)`` for ``"per_slot"``.

        Returns:
            ``(..., out_dim)``, the leading dims of ``x`` kept.

        Raises:
            ValueError: On a wrong shape; from PyTorch for ``"batch"`` when ``x`` holds a
                single embedding (batch statistics need at least 2 rows).
        """
        if x.ndim < 1 or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"x must be (..., in_dim) with in_dim={self.in_dim}; got {tuple(x.shape)}"
            )
        if self.norm == "per_slot":
            if x.ndim != 3 or x.shape[1] != self.num_slots:
                raise ValueError(
                    f"x must be (B, T, C) with T={self.num_slots}, C={self.in_dim} for "
                    f"norm='per_slot'; got {tuple(x.shape)}"
                )
            return self.layers(x)
        lead = x.shape[:-1]
        return self.layers(x.reshape(-1, self.in_dim)).reshape(*lead, self.out_dim)


class SliceDropout(nn.Module):
    """Mean of a crop's slice features, with dropout before or after the mean.

    The student's crop embedding is the mean of its ``S`` slice features; dropout with
    probability ``p`` regularises the projection head's input. Where it is applied changes
    how much noise reaches the head:

    * ``at="crop"`` (default): dropout on the mean. Every feature of the embedding is zeroed
      with probability ``p`` (the others scaled by ``1/(1-p)``): a noise of variance
      ``p/(1-p)`` times the squared feature.
    * ``at="slice"`` (research code): dropout on every slice's features, then the mean. The
      ``S`` independent masks average out: the noise variance is ``1/S`` of the above (at
      ``p=0.2``, ``S=32`` about what crop-level dropout with ``p=0.008`` gives), and almost
      no feature of the embedding is ever zero.

    In evaluation mode both are the plain mean over slices.

    Args:
        p: Dropout probability.
        at: ``"crop"`` or ``"slice"``.

    Shapes:
        input ``(B, M, S, d)`` slice features → output ``(B, M, d)``.

    Raises:
        UserError: On an unknown ``at``.
        ValueError: On a ``p`` outside ``[0, 1)``.
    """

    def __init__(self, p: float = 0.2, at: Literal["crop", "slice"] = "crop") -> None:
        super().__init__()
        look_up_option("at", at, DROPOUT_PLACES)
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"p must be in [0, 1); got {p!r}")
        self.at = at
        self.dropout = nn.Dropout(float(p))

    def extra_repr(self) -> str:
        return f"at={self.at!r}"

    def forward(self, x: Tensor) -> Tensor:
        """``(B, M, S, d)`` → ``(B, M, d)``: dropout and mean over the slice dim 2."""
        if x.ndim != 4:
            raise ValueError(f"x must be (B, M, S, d) slice features; got {tuple(x.shape)}")
        if self.at == "slice":
            return self.dropout(x).mean(dim=2)
        return self.dropout(x.mean(dim=2))
