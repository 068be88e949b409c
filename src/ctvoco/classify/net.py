"""The CNN-LSTM injury network (docs/algorithms.md §3.2).

Per-slice timm encoder -> bidirectional LSTM (or GRU) over slices -> pooling over slices
(``max`` default, ``mean``, ``attention``) -> five heads: ``bowel`` and ``extravasation``
(one logit each), ``kidney``, ``liver``, ``spleen`` (three logits each).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctvoco.errors import look_up_option
from ctvoco.labels import BINARY_TARGETS, TARGET_CLASSES, TARGETS
from ctvoco.models.backbone import SliceEncoder

SEQUENCE_MODELS = ("lstm", "gru")
SLICE_POOLINGS = ("max", "mean", "attention")


def head_sizes() -> dict[str, int]:
    """Logits per target: 1 for binary targets, 3 for the organs."""
    return {t: 1 if t in BINARY_TARGETS else len(TARGET_CLASSES[t]) for t in TARGETS}


class AttentionPool(nn.Module):
    """Softmax-weighted mean over slices: ``(B, S, F)`` -> ``(B, F)``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(features, features // 2), nn.Tanh(), nn.Linear(features // 2, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.softmax(self.score(x).squeeze(-1), dim=1)
        return torch.einsum("bs,bsf->bf", weights, x)


class InjuryNet(nn.Module):
    """Slice encoder + sequence model + slice pooling + five heads.

    Args:
        encoder: Per-slice encoder giving ``(N, F)`` features.
        sequence: ``lstm`` or ``gru`` (bidirectional).
        hidden: Hidden size per direction.
        layers: Number of recurrent layers.
        pooling: ``max``, ``mean`` or ``attention`` over slices.
        dropout: Dropout before the heads.
        slice_head: Add a linear head on every slice's sequence features (before pooling)
            giving ``slices``: ``(B, S, 2)`` bowel and extravasation logits per slice.

    Shapes:
        ``(B, S, C, H, W)`` float -> dict of logits, ``(B, 1)`` or ``(B, 3)`` per target
        (and ``slices`` with ``slice_head``).
    """

    def __init__(
        self,
        encoder: SliceEncoder,
        sequence: str = "lstm",
        hidden: int = 128,
        layers: int = 1,
        pooling: str = "max",
        dropout: float = 0.0,
        slice_head: bool = False,
    ) -> None:
        super().__init__()
        look_up_option("sequence", sequence, SEQUENCE_MODELS)
        look_up_option("pooling", pooling, SLICE_POOLINGS)
        self.encoder = encoder
        rnn = nn.LSTM if sequence == "lstm" else nn.GRU
        self.sequence = rnn(
            encoder.out_features, hidden, num_layers=layers, batch_first=True, bidirectional=True
        )
        self.pooling = pooling
        self.attention = AttentionPool(2 * hidden) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({t: nn.Linear(2 * hidden, n) for t, n in head_sizes().items()})
        # Only when asked for: without it the state dict keeps its keys.
        self.slice_head = nn.Linear(2 * hidden, 2) if slice_head else None

    def slice_features(self, x: Tensor) -> Tensor:
        """``(B, S, C, H, W)`` -> ``(B, S, F)`` encoder features."""
        b, s = x.shape[:2]
        return self.encoder(x.flatten(0, 1)).float().view(b, s, -1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.from_features(self.slice_features(x))

    def from_features(self, features: Tensor) -> dict[str, Tensor]:
        """``(B, S, F)`` slice features -> logits per target, ``(B, 1)`` or ``(B, 3)``."""
        if features.device.type == "cpu":
            # oneDNN's bf16 LSTM/GRU fails on CPU when torch runs single-threaded (each
            # process of CPU DDP): run the small sequence model in float32 there.
            with torch.autocast("cpu", enabled=False):
                sequence, _ = self.sequence(features.float())  # (B, S, 2*hidden)
        else:
            sequence, _ = self.sequence(features)  # (B, S, 2*hidden)
        if self.pooling == "max":
            pooled = sequence.max(dim=1).values
        elif self.pooling == "mean":
            pooled = sequence.mean(dim=1)
        else:
            assert self.attention is not None
            pooled = self.attention(sequence)
        pooled = self.dropout(pooled)
        out = {t: head(pooled) for t, head in self.heads.items()}
        if self.slice_head is not None:
            out["slices"] = self.slice_head(sequence)
        return out
