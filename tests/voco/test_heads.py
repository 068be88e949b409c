"""Tests for ctvoco.voco.heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctvoco.errors import UserError
from ctvoco.voco.heads import ProjectionHead

IN, HID, OUT = 12, 32, 24

SHAPE_CASES = [
    ((5, IN), (5, OUT)),  # (N, C)
    ((4, 11, IN), (4, 11, OUT)),  # (B, T, C)
    ((2, 3, 4, IN), (2, 3, 4, OUT)),  # any leading dims
]


@pytest.mark.parametrize(("in_shape", "out_shape"), SHAPE_CASES)
def test_batch_norm_head_shapes(in_shape, out_shape):
    head = ProjectionHead(IN, HID, OUT)
    assert head(torch.randn(in_shape)).shape == out_shape


@pytest.mark.parametrize("in_shape", [(4, 11, IN), (2, 3, 4, IN)])
def test_batch_norm_equals_layers_on_flattened_input(in_shape):
    torch.manual_seed(0)
    head = ProjectionHead(IN, HID, OUT)
    x = torch.randn(in_shape)
    expected = head.layers(x.reshape(-1, IN)).reshape(*in_shape[:-1], OUT)
    torch.testing.assert_close(head(x), expected)


BN_INDICES = (1, 4)
LINEAR_INDICES = (0, 3, 6)


def test_batch_norm_standardises_each_feature_over_all_crops():
    head = ProjectionHead(IN, HID, OUT)
    x = torch.randn(4, 11, IN)
    hidden = head.layers[:2](x.reshape(-1, IN))  # (44, HID) after the first BatchNorm
    torch.testing.assert_close(hidden.mean(0), torch.zeros(HID), atol=1e-5, rtol=0)
    torch.testing.assert_close(hidden.var(0, unbiased=False), torch.ones(HID), atol=1e-3, rtol=0)


def test_default_sizes_and_layer_order():
    head = ProjectionHead(64)
    kinds = [type(layer) for layer in head.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert head.layers[0].in_features == 64
    assert head.layers[0].out_features == 2048
    assert head.layers[3].out_features == 2048
    assert head.layers[6].out_features == 2048
    assert head.out_dim == 2048
    assert all(head.layers[i].num_features == 2048 for i in BN_INDICES)


@pytest.mark.parametrize(
    ("norm", "num_slots", "features"), [("batch", None, HID), ("per_slot", 11, 11)]
)
def test_norms_have_no_parameters_or_running_stats(norm, num_slots, features):
    head = ProjectionHead(IN, HID, OUT, norm=norm, num_slots=num_slots)
    assert isinstance(head.layers[-1], nn.Linear)  # no BatchNorm after the last Linear
    norms = [m for m in head.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms == [head.layers[i] for i in BN_INDICES]
    for bn in norms:
        assert bn.num_features == features
        assert not bn.affine and not bn.track_running_stats
        assert list(bn.parameters()) == []
        assert list(bn.buffers()) == []
        assert bn.running_mean is None and bn.running_var is None
    # only the three Linear layers hold parameters, and the head has no buffers at all
    expected = [p for i in LINEAR_INDICES for p in head.layers[i].parameters()]
    assert [id(p) for p in head.parameters()] == [id(p) for p in expected]
    assert list(head.buffers()) == []
    assert set(head.state_dict()) == {
        f"layers.{i}.{w}" for i in LINEAR_INDICES for w in ("weight", "bias")
    }


@pytest.mark.parametrize(
    ("norm", "num_slots", "shape"),
    [("batch", None, (5, IN)), ("batch", None, (4, 11, IN)), ("per_slot", 11, (4, 11, IN))],
)
def test_eval_output_equals_train_output(norm, num_slots, shape):
    torch.manual_seed(0)
    head = ProjectionHead(IN, HID, OUT, norm=norm, num_slots=num_slots)
    x = torch.randn(shape)
    y_train = head.train()(x)
    head(torch.randn(shape) * 3 + 1)  # another training batch leaves no state behind
    y_eval = head.eval()(x)
    torch.testing.assert_close(y_eval, y_train, atol=0, rtol=0)


def test_single_volume_batch_works():
    # the caller passes (B, K + n², C); with B = 1 BatchNorm still sees K + n² >= 2 rows
    head = ProjectionHead(IN, HID, OUT)
    x = torch.randn(1, 3 + 9, IN)
    for mode in (True, False):
        y = head.train(mode)(x)
        assert y.shape == (1, 12, OUT)
        assert torch.isfinite(y).all()
    torch.testing.assert_close(y, head.layers(x[0]).unsqueeze(0))


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_single_embedding_raises(train):
    # batch statistics need at least 2 rows; PyTorch refuses a single one in eval mode too
    head = ProjectionHead(IN, HID, OUT).train(train)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        head(torch.randn(1, IN))


def test_per_slot_norm_is_per_slot_and_differs_from_batch():
    torch.manual_seed(0)
    batch_head = ProjectionHead(IN, HID, OUT, norm="batch")
    per_slot_head = ProjectionHead(IN, HID, OUT, norm="per_slot", num_slots=11)
    per_slot_head.load_state_dict(batch_head.state_dict())  # same Linear weights; BNs have none
    assert all(per_slot_head.layers[i].num_features == 11 for i in BN_INDICES)
    x = torch.randn(4, 11, IN)
    y_per_slot = per_slot_head(x)
    assert y_per_slot.shape == (4, 11, OUT)
    assert not torch.allclose(y_per_slot, batch_head(x), atol=1e-3)
    # per-slot quirk: each slot is standardised over (B, C) together
    pre = per_slot_head.layers[0](x)
    hidden = per_slot_head.layers[1](pre)
    torch.testing.assert_close(hidden.mean(dim=(0, 2)), torch.zeros(11), atol=1e-5, rtol=0)
    # and equals BatchNorm1d(T) applied by hand to the (B, T, C) pre-activation
    manual = (pre - pre.mean(dim=(0, 2), keepdim=True)) / torch.sqrt(
        pre.var(dim=(0, 2), unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(hidden, manual, atol=1e-5, rtol=1e-5)


def test_per_slot_single_volume_works():
    head = ProjectionHead(IN, HID, OUT, norm="per_slot", num_slots=11).eval()
    y = head(torch.randn(1, 11, IN))
    assert y.shape == (1, 11, OUT)
    assert torch.isfinite(y).all()


def test_per_slot_requires_num_slots():
    with pytest.raises(ValueError, match="num_slots"):
        ProjectionHead(IN, norm="per_slot")


@pytest.mark.parametrize("shape", [(4, 10, IN), (44, IN), (2, 4, 11, IN)])
def test_per_slot_rejects_other_input_shapes(shape):
    head = ProjectionHead(IN, HID, OUT, norm="per_slot", num_slots=11)
    with pytest.raises(ValueError, match="T=11"):
        head(torch.randn(shape))


def test_num_slots_ignored_for_batch_norm():
    head = ProjectionHead(IN, HID, OUT, norm="batch", num_slots=11)
    assert head(torch.randn(3, 5, IN)).shape == (3, 5, OUT)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_dim": 0}, "in_dim"),
        ({"in_dim": IN, "hidden_dim": -1}, "hidden_dim"),
        ({"in_dim": IN, "out_dim": 2.0}, "out_dim"),
        ({"in_dim": IN, "norm": "per_slot", "num_slots": 0}, "num_slots"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProjectionHead(**kwargs)


def test_unknown_norm_is_a_user_error_with_the_closest_option():
    with pytest.raises(UserError, match="norm must be one of batch, per_slot; got 'layer'"):
        ProjectionHead(IN, norm="layer")
    with pytest.raises(UserError, match="did you mean 'per_slot'"):
        ProjectionHead(IN, norm="perslot", num_slots=2)


def test_wrong_feature_size_raises():
    with pytest.raises(ValueError, match="in_dim=12; got \\(3, 13\\)"):
        ProjectionHead(IN, HID, OUT)(torch.randn(3, 13))


def test_eval_mode_and_backward():
    head = ProjectionHead(IN, HID, OUT)
    x = torch.randn(6, IN, requires_grad=True)
    head(x).square().sum().backward()
    assert x.grad is not None
    head.eval()
    assert head(torch.randn(3, 4, IN)).shape == (3, 4, OUT)
