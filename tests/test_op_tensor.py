"""tensor (TFN): `Linear(flatten([1;p_1] ⊗ ... ⊗ [1;p_M]))`, `p_m = Linear(h_m)`."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import fusion_ops as F
import fusion_ops.tensor  # noqa: F401  (registers "tensor" until fusion_ops/__init__ imports it)
from tests.flops_util import batch_of, linear


def hand_flops(op, feats) -> int:
    batch, k1, n_mod = batch_of(feats), op.args["proj_dim"] + 1, len(op.in_dims)
    projections = sum(linear(batch, d, k1 - 1) for d in op.in_dims.values())
    outer = batch * sum(k1**j for j in range(2, n_mod + 1))  # 1 per multiply, successive products
    return projections + outer + linear(batch, k1**n_mod, op.out_dim)


def slow_tfn(op, feats):
    """Per sample: `z[i_1..i_M] = Π_m [1;p_m][i_m]` by explicit index loops, then the same Linear."""
    names = sorted(feats)
    rows = []
    for b in range(batch_of(feats)):
        vs = []
        for proj, m in zip(op.projections, names, strict=True):
            p = feats[m][b] @ proj.weight.T + proj.bias
            vs.append(torch.cat([p.new_ones(1), p]))
        z = [math.prod(v[i] for v, i in zip(vs, idx, strict=True)) for idx in itertools.product(*(range(len(v)) for v in vs))]
        rows.append(torch.stack(z) @ op.linear.weight.T + op.linear.bias)
    return torch.stack(rows)


@pytest.mark.parametrize("dims", [{"b": 3, "a": 2}, {"c": 4, "a": 2, "b": 3}])
def test_tensor_is_linear_of_explicit_outer_product(dims):
    torch.manual_seed(0)
    op = F.create_fusion("tensor", dims, 4, proj_dim=3).double()
    feats = {m: torch.randn(5, d, dtype=torch.float64) for m, d in dims.items()}
    assert op.outer(feats).shape == (5, 4 ** len(dims))
    torch.testing.assert_close(op(feats), slow_tfn(op, feats), rtol=1e-12, atol=1e-12)


def test_tensor_outer_product_keeps_unimodal_terms():
    """`[1;p]` puts 1, then p_2, then p_1 (first modality slowest) at the start of z."""
    torch.manual_seed(0)
    op = F.create_fusion("tensor", {"a": 2, "b": 3}, 4, proj_dim=3)
    feats = {"a": torch.randn(2, 2), "b": torch.randn(2, 3)}
    z = op.outer(feats).view(2, 4, 4)  # (B, k+1, k+1): rows index [1;p_a], columns [1;p_b]
    p_a, p_b = op.project(feats)
    torch.testing.assert_close(z[:, 0, 0], torch.ones(2))
    torch.testing.assert_close(z[:, 0, 1:], p_b)
    torch.testing.assert_close(z[:, 1:, 0], p_a)


def test_tensor_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"tensor\.proj_dim: must be >= 1"):
        F.create_fusion("tensor", {"a": 2, "b": 3}, 4, proj_dim=0)
    with pytest.raises(ValueError, match=r"tensor\.proj_dim: must be <= 64"):
        F.create_fusion("tensor", {"a": 2, "b": 3}, 4, proj_dim=65)
    with pytest.raises(ValueError, match=r"tensor\.proj_dim: expected an integer"):
        F.create_fusion("tensor", {"a": 2, "b": 3}, 4, proj_dim=2.5)
    # 65**3 = 274625 features: over the limit, refused before any weight is allocated
    with pytest.raises(ValueError, match=r"tensor\.proj_dim: .*274625 features"):
        F.create_fusion("tensor", {"a": 2, "b": 3, "c": 4}, 4, proj_dim=64)
    F.create_fusion("tensor", {"a": 2, "b": 3}, 4, proj_dim=64)  # 65**2: fine
    assert 39**3 <= fusion_ops.tensor.MAX_TENSOR_SIZE < 41**3
    F.create_fusion("tensor", {"a": 2, "b": 3, "c": 4}, 1, proj_dim=38)  # 59319: fine


def test_tensor_flops_at_two_sizes():
    for dims, k, out, batch in [({"a": 2, "b": 3}, 2, 4, 1), ({"a": 9, "b": 5, "c": 7}, 4, 6, 3)]:
        op = F.create_fusion("tensor", dims, out, proj_dim=k)
        feats = {m: torch.randn(batch, d) for m, d in dims.items()}
        k1, d_sum, n = k + 1, sum(dims.values()), len(dims)
        outer = batch * sum(k1**j for j in range(2, n + 1))
        assert op.interaction_flops(feats) == outer > 0
        expected = 2 * batch * d_sum * k + outer + 2 * batch * k1**n * out
        assert F.count_flops(op, feats) == expected
    # second size written out: 2*3*21*4 + 3*(25+125) + 2*3*125*6
    assert expected == 504 + 450 + 4500
