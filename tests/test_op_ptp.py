"""ptp (polynomial tensor pooling): `z_o = Σ_r Π_p (W_{r,p}ᵀ x)_o`, `x = [1; h_1; ...; h_M]`."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import fusion_ops as F
import fusion_ops.ptp  # noqa: F401  (registers until fusion_ops/__init__ imports it)
from tests.flops_util import batch_of, linear


def hand_flops(op, feats) -> int:
    batch, p, r, o = batch_of(feats), op.args["order"], op.args["rank"], op.out_dim
    width = 1 + sum(op.in_dims.values())
    factors = linear(batch, width, p * r * o)  # every W_{r,p}ᵀ x
    product = batch * (p - 1) * r * o  # 1 per multiply over the P factors; the sum over r is not counted
    return factors + product


def x_of(feats) -> list[list[float]]:
    """`[1; h_1; ...; h_M]` per sample, names sorted, as plain lists."""
    names = sorted(feats)
    return [[1.0, *itertools.chain.from_iterable(feats[m][b].tolist() for m in names)] for b in range(batch_of(feats))]


def slow_ptp(op, feats) -> torch.Tensor:
    """`z[b, o] = Σ_r Π_p Σ_i W[p, r, i, o] x[b, i]` with explicit loops."""
    w = op.factors.detach()
    p_, r_, d_, o_ = w.shape
    out = torch.zeros(batch_of(feats), o_, dtype=torch.float64)
    for b, x in enumerate(x_of(feats)):
        for o in range(o_):
            total = 0.0
            for r in range(r_):
                prod = 1.0
                for p in range(p_):
                    prod *= sum(float(w[p, r, i, o]) * x[i] for i in range(d_))
                total += prod
            out[b, o] = total
    return out


def feats64(dims, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=g, dtype=torch.float64) for m, d in dims.items()}


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_ptp_matches_the_cp_formula(order):
    torch.manual_seed(0)
    dims = {"b": 3, "a": 2}
    op = F.create_fusion("ptp", dims, 2, order=order, rank=3).double()
    feats = feats64(dims, 4)
    torch.testing.assert_close(op(feats), slow_ptp(op, feats), rtol=1e-12, atol=1e-12)


def set_quadratic(op, qs: torch.Tensor) -> None:
    """Factors with `Σ_r (a_rᵀx)(b_rᵀx) = xᵀ Q_o x` per output, from the SVD `Q_o = Σ_r s_r u_r v_rᵀ`."""
    u, s, vh = torch.linalg.svd(qs)  # (o, D, D), (o, D), (o, D, D)
    n = min(op.args["rank"], qs.shape[-1])
    with torch.no_grad():
        op.factors.zero_()
        op.factors[0, :n] = (u * s[:, None, :])[:, :, :n].permute(2, 1, 0)  # a_r = s_r u_r: (n, D, o)
        op.factors[1, :n] = vh[:, :n, :].permute(1, 2, 0)  # b_r = v_r: (n, D, o)


def test_ptp_order_two_at_full_rank_is_any_quadratic_form():
    """With P=2 and rank = D the op reproduces `z_o = xᵀ Q_o x` for a given (non-symmetric) `Q_o`."""
    dims, o = {"b": 3, "a": 2}, 3
    d = 1 + sum(dims.values())
    g = torch.Generator().manual_seed(1)
    qs = torch.randn(o, d, d, generator=g, dtype=torch.float64)
    op = F.create_fusion("ptp", dims, o, order=2, rank=d).double()
    set_quadratic(op, qs)
    feats = feats64(dims, 5, seed=2)
    expected = torch.tensor(
        [[sum(x[i] * float(qs[j, i, k]) * x[k] for i in range(d) for k in range(d)) for j in range(o)]
         for x in x_of(feats)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(op(feats), expected, rtol=1e-12, atol=1e-12)
    # the constant 1 in x: the form holds the constant, linear and quadratic terms of h
    assert torch.all(expected != 0)
    # a generic Q_o has rank D: one rank fewer cannot reproduce it
    low = F.create_fusion("ptp", dims, o, order=2, rank=d - 1).double()
    set_quadratic(low, qs)
    assert (low(feats) - expected).abs().max() > 1e-3


def test_ptp_order_three_is_the_explicit_triple_sum():
    """P=3: `z_o = Σ_ijk T_o[i,j,k] x_i x_j x_k` with `T_o = Σ_r W_{r,1}[:,o] ∘ W_{r,2}[:,o] ∘ W_{r,3}[:,o]`."""
    torch.manual_seed(3)
    dims, o, r = {"c": 2, "a": 1, "b": 2}, 2, 4
    op = F.create_fusion("ptp", dims, o, order=3, rank=r).double()
    w = op.factors.detach()
    d = w.shape[2]
    t = torch.zeros(o, d, d, d, dtype=torch.float64)
    for oo, rr, i, j, k in itertools.product(range(o), range(r), range(d), range(d), range(d)):
        t[oo, i, j, k] += w[0, rr, i, oo] * w[1, rr, j, oo] * w[2, rr, k, oo]
    feats = feats64(dims, 3, seed=4)
    expected = torch.tensor(
        [[sum(float(t[oo, i, j, k]) * x[i] * x[j] * x[k] for i in range(d) for j in range(d) for k in range(d))
          for oo in range(o)] for x in x_of(feats)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(op(feats), expected, rtol=1e-12, atol=1e-12)


def finite_difference(zs: torch.Tensor, k: int) -> torch.Tensor:
    """`Δ^k z(0) = Σ_j (-1)^(k-j) C(k, j) z(j)` for samples `zs[j] = z(j)`."""
    return sum((-1) ** (k - j) * math.comb(k, j) * zs[j] for j in range(k + 1))


def test_ptp_is_a_polynomial_of_degree_order_in_the_features():
    """Along a line `h = h0 + t·v`, z(t) has degree exactly P: the (P+1)-th finite difference vanishes."""
    torch.manual_seed(5)
    dims = {"a": 2, "b": 3}
    h0, v = feats64(dims, 1, seed=6), feats64(dims, 1, seed=7)
    for order in (2, 3, 4):
        op = F.create_fusion("ptp", dims, 2, order=order, rank=2).double()
        zs = torch.stack([op({m: h0[m] + t * v[m] for m in dims})[0] for t in range(order + 2)])  # (P+2, o)
        assert finite_difference(zs, order + 1).abs().max() < 1e-9
        assert finite_difference(zs, order).abs().max() > 1e-3


def test_ptp_sorts_modalities_into_x():
    op = F.create_fusion("ptp", {"b": 1, "a": 2}, 1, order=2, rank=1).double()
    with torch.no_grad():  # z = x_1 · x_3 = h_a[0] · h_b[0] only if a comes first
        op.factors.zero_()
        op.factors[0, 0, 1, 0] = 1.0
        op.factors[1, 0, 3, 0] = 1.0
    a, b = torch.tensor([[2.0, 5.0]], dtype=torch.float64), torch.tensor([[3.0]], dtype=torch.float64)
    assert op({"b": b, "a": a}).item() == 6.0


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_ptp_parameters_grow_linearly_in_order(order):
    dims, o, r = {"a": 6, "b": 5, "c": 4}, 3, 7
    op = F.create_fusion("ptp", dims, o, order=order, rank=r)
    assert F.count_params(op) == order * r * (1 + 15) * o
    assert {n for n, _ in op.named_parameters()} == {"factors"}


def test_ptp_initial_output_scale_is_moderate_at_every_order():
    g = torch.Generator().manual_seed(8)
    dims = {"a": 12, "b": 20}
    feats = {m: torch.randn(2000, d, generator=g) for m, d in dims.items()}
    for order in (2, 5):
        torch.manual_seed(9)
        z = F.create_fusion("ptp", dims, 8, order=order, rank=16)(feats)
        assert 0.2 < z.detach().std().item() < 5.0


def test_ptp_rejects_bad_arguments():
    dims = {"a": 2, "b": 3}
    with pytest.raises(ValueError, match=r"ptp\.order: must be >= 2"):
        F.create_fusion("ptp", dims, 4, order=1)
    with pytest.raises(ValueError, match=r"ptp\.order: must be <= 5"):
        F.create_fusion("ptp", dims, 4, order=6)
    with pytest.raises(ValueError, match=r"ptp\.order: expected an integer"):
        F.create_fusion("ptp", dims, 4, order=2.0)
    with pytest.raises(ValueError, match=r"ptp\.rank: must be >= 1"):
        F.create_fusion("ptp", dims, 4, rank=0)
    with pytest.raises(ValueError, match=r"ptp\.rank: must be <= 64"):
        F.create_fusion("ptp", dims, 4, rank=65)


def test_ptp_flops_at_two_sizes():
    for dims, p, r, out, batch in [({"a": 2, "b": 3}, 2, 1, 4, 1), ({"a": 9, "b": 5, "c": 7}, 4, 6, 5, 3)]:
        op = F.create_fusion("ptp", dims, out, order=p, rank=r)
        feats = {m: torch.randn(batch, d) for m, d in dims.items()}
        product = batch * (p - 1) * r * out
        assert op.interaction_flops(feats) == product > 0
        assert F.count_flops(op, feats) == 2 * batch * (1 + sum(dims.values())) * p * r * out + product
    # second size written out: 2*3*22*120 + 3*3*30
    assert F.count_flops(op, feats) == 15840 + 270
