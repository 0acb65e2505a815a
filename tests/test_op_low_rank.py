"""low_rank (LMF): `Σ_i w_i Π_m (W_m^(i)ᵀ [1;h_m]) + b`, a rank-r TFN linear map."""
from __future__ import annotations

import math

import pytest
import torch

import fusion_ops as F
import fusion_ops.low_rank  # noqa: F401  (registers until fusion_ops/__init__ imports them)
import fusion_ops.tensor  # noqa: F401
from tests.flops_util import batch_of, linear


def hand_flops(op, feats) -> int:
    batch, r, o, n_mod = batch_of(feats), op.args["rank"], op.out_dim, len(op.in_dims)
    factors = sum(linear(batch, d + 1, r * o) for d in op.in_dims.values())  # [1;h_m] · W_m
    product = batch * (n_mod - 1) * r * o  # 1 per multiply over modalities
    return factors + product + linear(batch, r, o)  # rank-weighted sum


def slow_lmf(op, feats):
    """`out[b, j] = Σ_i w_i Π_m (Σ_c W_m[i, c, j] [1;h_m][c]) + b_j` with explicit loops."""
    names = sorted(feats)
    out = torch.zeros(batch_of(feats), op.out_dim, dtype=torch.float64)
    for b in range(out.shape[0]):
        for j in range(op.out_dim):
            total = op.bias[0, j]
            for i in range(op.args["rank"]):
                prod = op.rank_weight[0, i]
                for w, m in zip(op.factors, names, strict=True):
                    v = [1.0, *feats[m][b].tolist()]
                    prod = prod * sum(w[i, c, j] * v[c] for c in range(len(v)))
                total = total + prod
            out[b, j] = total
    return out


@pytest.mark.parametrize("dims", [{"b": 3, "a": 2}, {"c": 4, "a": 2, "b": 3}])
def test_low_rank_matches_per_rank_formula(dims):
    torch.manual_seed(0)
    op = F.create_fusion("low_rank", dims, 3, rank=3).double()
    with torch.no_grad():
        op.bias.normal_()  # zero at init: give it something to get wrong
    feats = {m: torch.randn(4, d, dtype=torch.float64) for m, d in dims.items()}
    torch.testing.assert_close(op(feats), slow_lmf(op, feats), rtol=1e-12, atol=1e-12)


def affine_with_one(proj):
    """`T` with `[1; proj(h)] = T [1; h]`: shape `(k+1, d+1)`."""
    k, d = proj.weight.shape
    t = torch.zeros(k + 1, d + 1, dtype=proj.weight.dtype)
    t[0, 0] = 1.0
    t[1:, 0], t[1:, 1:] = proj.bias, proj.weight
    return t


def lmf_from_tfn(tfn, rank):
    """A `low_rank` on the raw inputs whose factors are SVDs of the TFN weight, per output.

    Output j of TFN is `[1;p_1]ᵀ A_j [1;p_2] + c_j` with `A_j` = row j as a (k+1, k+1)
    matrix; `A_j = Σ_i s_i u_i v_iᵀ` gives the rank-i factors, pulled back through
    `[1;p_m] = T_m [1;h_m]` so that they act on `[1;h_m]`.
    """
    a, b = tfn.names
    k1, o = tfn.args["proj_dim"] + 1, tfn.out_dim
    lmf = F.create_fusion("low_rank", tfn.in_dims, o, rank=rank).double()
    ta, tb = affine_with_one(tfn.projections[0]), affine_with_one(tfn.projections[1])
    with torch.no_grad():
        u, s, vh = torch.linalg.svd(tfn.linear.weight.view(o, k1, k1))  # (o, k1, k1), (o, k1), (o, k1, k1)
        n = min(rank, k1)
        lmf.factors[0].zero_()
        lmf.factors[1].zero_()
        lmf.factors[0][:n] = (ta.T @ (u[:, :, :n] * s[:, None, :n])).permute(2, 1, 0)  # (n, d_a+1, o)
        lmf.factors[1][:n] = (tb.T @ vh[:, :n, :].transpose(1, 2)).permute(2, 1, 0)  # (n, d_b+1, o)
        lmf.rank_weight.fill_(1.0)
        lmf.bias.copy_(tfn.linear.bias[None])
    return lmf


def test_low_rank_reproduces_a_tensor_map_of_no_greater_rank():
    torch.manual_seed(0)
    dims, k, o, true_rank = {"b": 4, "a": 3}, 4, 3, 2
    tfn = F.create_fusion("tensor", dims, o, proj_dim=k).double()
    with torch.no_grad():  # a TFN weight whose per-output (k+1, k+1) matrices have rank 2
        left, right = torch.randn(o, k + 1, true_rank).double(), torch.randn(o, true_rank, k + 1).double()
        tfn.linear.weight.copy_((left @ right).reshape(o, (k + 1) ** 2))
    feats = {m: torch.randn(6, d, dtype=torch.float64) for m, d in dims.items()}
    expected = tfn(feats)
    for rank in (true_rank, k + 1, 7):
        torch.testing.assert_close(lmf_from_tfn(tfn, rank)(feats), expected, rtol=1e-10, atol=1e-10)
    # rank 1 is too small for this map: the same construction must then miss
    assert (lmf_from_tfn(tfn, 1)(feats) - expected).abs().max() > 1e-2


def test_low_rank_factors_are_registered_parameters():
    op = F.create_fusion("low_rank", {"b": 4, "a": 3}, 5, rank=2)
    names = {n for n, _ in op.named_parameters()}
    assert names == {"factors.0", "factors.1", "rank_weight", "bias"}
    assert tuple(op.factors[0].shape) == (2, 4, 5)  # sorted: "a" (width 3) first
    assert F.count_params(op) == 2 * (4 + 5) * 5 + 2 + 5
    before = [w.detach().clone() for w in op.factors]
    opt = torch.optim.SGD(op.parameters(), lr=0.1)
    op({"a": torch.randn(4, 3), "b": torch.randn(4, 4)}).pow(2).sum().backward()
    opt.step()
    assert all(not torch.equal(w, w0) for w, w0 in zip(op.factors, before, strict=True))


def test_low_rank_initialisation_is_xavier_normal_with_zero_bias():
    torch.manual_seed(0)
    r, d, o = 16, 63, 16
    op = F.create_fusion("low_rank", {"a": d, "b": d}, o, rank=r)
    for w in op.factors:  # xavier on (r, d+1, o): fan_in = (d+1) o, fan_out = r o
        assert w.std().item() == pytest.approx(math.sqrt(2 / ((d + 1) * o + r * o)), rel=0.05)
    assert torch.equal(op.bias, torch.zeros(1, o))
    assert op.rank_weight.abs().sum() > 0


def test_low_rank_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"low_rank\.rank: must be >= 1"):
        F.create_fusion("low_rank", {"a": 2, "b": 3}, 4, rank=0)
    with pytest.raises(ValueError, match=r"low_rank\.rank: must be <= 64"):
        F.create_fusion("low_rank", {"a": 2, "b": 3}, 4, rank=65)
    with pytest.raises(ValueError, match=r"low_rank\.rank: expected an integer"):
        F.create_fusion("low_rank", {"a": 2, "b": 3}, 4, rank=True)


def test_low_rank_flops_at_two_sizes():
    for dims, r, out, batch in [({"a": 2, "b": 3}, 1, 4, 1), ({"a": 9, "b": 5, "c": 7}, 6, 5, 3)]:
        op = F.create_fusion("low_rank", dims, out, rank=r)
        feats = {m: torch.randn(batch, d) for m, d in dims.items()}
        product = batch * (len(dims) - 1) * r * out
        assert op.interaction_flops(feats) == product > 0
        expected = 2 * batch * sum(d + 1 for d in dims.values()) * r * out + product + 2 * batch * r * out
        assert F.count_flops(op, feats) == expected
    # second size written out: 2*3*24*30 + 3*2*30 + 2*3*30
    assert expected == 4320 + 180 + 180
