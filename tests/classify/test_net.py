"""Tests of :class:`ctvoco.classify.net.InjuryNet` (docs/algorithms.md §3.2) with tiny timm models."""

from __future__ import annotations

import pytest
import torch

from ctvoco.classify.net import AttentionPool, InjuryNet, head_sizes
from ctvoco.errors import UserError
from ctvoco.labels import TARGETS
from ctvoco.models.backbone import SliceEncoder, create_backbone

EXPECTED_HEADS = {"bowel": 1, "extravasation": 1, "kidney": 3, "liver": 3, "spleen": 3}


def _net(backbone: str = "test_efficientnet", in_chans: int = 1, **kwargs) -> InjuryNet:
    torch.manual_seed(0)
    encoder = SliceEncoder(create_backbone(backbone, in_chans=in_chans), "avg")
    return InjuryNet(encoder, hidden=kwargs.pop("hidden", 8), **kwargs)


def _batch(b: int = 2, s: int = 4, c: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, s, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_head_sizes_follow_the_schema():
    assert head_sizes() == EXPECTED_HEADS
    assert tuple(head_sizes()) == TARGETS


@pytest.mark.parametrize("sequence", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_logit_shapes_per_head(sequence, pooling):
    net = _net(sequence=sequence, pooling=pooling, hidden=6).eval()
    with torch.no_grad():
        out = net(_batch(b=3, s=5))
    assert list(out) == list(TARGETS)
    for target, size in EXPECTED_HEADS.items():
        assert out[target].shape == (3, size), target
        assert torch.isfinite(out[target]).all()
    rnn = net.sequence
    assert isinstance(rnn, torch.nn.LSTM if sequence == "lstm" else torch.nn.GRU)
    assert rnn.bidirectional
    assert rnn.batch_first
    assert (net.attention is not None) == (pooling == "attention")


@pytest.mark.parametrize("backbone", ["test_efficientnet", "test_resnet"])
def test_multi_channel_slices_and_other_backbones(backbone):
    net = _net(backbone, in_chans=2, layers=2).eval()
    with torch.no_grad():
        out = net(_batch(b=1, s=3, c=2))
    assert {t: v.shape for t, v in out.items()} == {
        t: torch.Size([1, n]) for t, n in EXPECTED_HEADS.items()
    }


def test_slice_features_shape():
    net = _net().eval()
    with torch.no_grad():
        feats = net.slice_features(_batch(b=2, s=5))
    assert feats.shape == (2, 5, net.encoder.out_features)
    assert net.sequence.input_size == net.encoder.out_features


def test_backward_reaches_every_parameter():
    net = _net(pooling="attention").train()
    out = net(_batch())
    sum(v.sum() for v in out.values()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sequence": "transformer"}, r"^sequence must be one of lstm, gru"),
        ({"sequence": "LSTM"}, r"^sequence must be one of lstm, gru"),
        ({"pooling": "min"}, r"^pooling must be one of max, mean, attention"),
        ({"pooling": ""}, r"^pooling must be one of max, mean, attention"),
    ],
)
def test_invalid_options_raise_user_error(kwargs, match):
    with pytest.raises(UserError, match=match):
        _net(**kwargs)


def test_invalid_encoder_pooling_raises_user_error():
    with pytest.raises(UserError, match="pooling"):
        SliceEncoder(create_backbone("test_efficientnet"), "max")


def test_encoder_is_per_slice():
    """Permuting slices permutes the encoder features: the encoder sees slices independently."""
    net = _net().eval()
    x = _batch(b=2, s=5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        assert torch.allclose(
            net.slice_features(x[:, perm]), net.slice_features(x)[:, perm], atol=1e-5
        )


@pytest.mark.parametrize("sequence", ["lstm", "gru"])
def test_slice_order_matters_for_the_recurrent_model(sequence):
    net = _net(sequence=sequence, hidden=8).eval()
    x = _batch(b=2, s=6, seed=3)
    with torch.no_grad():
        original = net(x)
        reversed_ = net(x.flip(1))
        shuffled = net(x[:, torch.tensor([2, 5, 0, 3, 1, 4])])
    for other in (reversed_, shuffled):
        assert any(not torch.allclose(original[t], other[t], atol=1e-6) for t in TARGETS)


def test_batch_items_are_independent_in_eval():
    net = _net(pooling="attention").eval()
    x = _batch(b=3, s=4)
    with torch.no_grad():
        together = net(x)
        alone = net(x[1:2])
    for t in TARGETS:
        assert torch.allclose(together[t][1:2], alone[t], atol=1e-5)


def test_attention_pool_of_identical_slices_is_that_slice():
    torch.manual_seed(0)
    pool = AttentionPool(6)
    row = torch.randn(2, 1, 6)
    x = row.expand(2, 5, 6)
    assert torch.allclose(pool(x), row[:, 0], atol=1e-6)


def test_attention_pool_is_a_convex_combination():
    torch.manual_seed(1)
    pool = AttentionPool(4)
    x = torch.randn(3, 7, 4)
    out = pool(x)
    assert out.shape == (3, 4)
    assert (out <= x.max(dim=1).values + 1e-6).all()
    assert (out >= x.min(dim=1).values - 1e-6).all()


@pytest.mark.parametrize("sequence", ["lstm", "gru"])
def test_bf16_autocast_on_one_cpu_thread(sequence: str):
    """Each process of CPU DDP runs single-threaded, where oneDNN's bf16 RNN fails."""
    net = _net(sequence=sequence)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(_batch())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.isfinite(v.float()).all() for v in logits.values())
