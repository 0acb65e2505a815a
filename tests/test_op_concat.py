"""concat: `Linear(cat_m h_m)`."""
from __future__ import annotations

import torch

import fusion_ops as F
from tests.flops_util import batch_of, linear


def hand_flops(op, feats) -> int:
    return linear(batch_of(feats), sum(op.in_dims.values()), op.out_dim)


def test_concat_is_linear_of_sorted_concatenation():
    op = F.create_fusion("concat", {"b": 3, "a": 2}, 4)
    a, b = torch.randn(5, 2), torch.randn(5, 3)
    W, bias = op.linear.weight, op.linear.bias
    expected = torch.cat([a, b], dim=1) @ W.T + bias  # sorted: a then b
    torch.testing.assert_close(op({"b": b, "a": a}), expected)


def test_concat_flops_at_two_sizes():
    for dims, out, batch in [({"a": 2, "b": 3}, 4, 1), ({"a": 64, "b": 32, "c": 8}, 16, 9)]:
        op = F.create_fusion("concat", dims, out)
        feats = {m: torch.randn(batch, d) for m, d in dims.items()}
        assert F.count_flops(op, feats) == 2 * batch * sum(dims.values()) * out
