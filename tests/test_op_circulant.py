"""circulant (MCF): projections and `circ(p_a) · p_b` for ordered pairs, then `Linear`."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fusion_ops as F
import fusion_ops.circulant  # noqa: F401  (registers "circulant" until fusion_ops/__init__ imports it)
from fusion_ops.circulant import circulant_products
from tests.flops_util import batch_of, fft, linear


def hand_flops(op, feats) -> int:
    """Projections, one rfft per modality, one irfft and `4 (d//2+1)` multiplies per pair, output linear."""
    b, d, m = batch_of(feats), op.args["dim"], len(op.names)
    pairs = m * (m - 1)
    proj = sum(linear(b, op.in_dims[n], d) for n in op.names)
    spectral = fft(b * m, d, real=True) + fft(b * pairs, d, real=True) + b * pairs * 4 * (d // 2 + 1)
    return proj + spectral + linear(b, m * m * d, op.out_dim)


def circ(x):
    """The explicit circulant matrix: row i = roll(x, i)."""
    return torch.stack([torch.roll(x, i) for i in range(x.shape[0])])


def test_circ_rows_are_rolls():
    C = circ(torch.tensor([1.0, 2.0, 3.0]))
    assert C.tolist() == [[1, 2, 3], [3, 1, 2], [2, 3, 1]]


@pytest.mark.parametrize("d", [2, 5, 8])
def test_fft_products_equal_explicit_circulant_matrix(d):
    g = torch.Generator().manual_seed(d)
    p = torch.randn(3, 3, d, generator=g, dtype=torch.float64)  # (B, M, d)
    got = circulant_products(p)
    pairs = list(itertools.permutations(range(3), 2))
    assert got.shape == (3, len(pairs), d)
    for i in range(3):
        for k, (a, b) in enumerate(pairs):
            torch.testing.assert_close(got[i, k], circ(p[i, a]) @ p[i, b])


def slow_circulant(op, feats):
    """The definition with explicit matrices and loops over samples and pairs."""
    names = sorted(feats)
    outs = []
    for i in range(batch_of(feats)):
        ps = [lin.weight @ feats[m][i] + lin.bias for lin, m in zip(op.proj, names, strict=True)]
        inter = [circ(ps[a]) @ ps[b] for a in range(len(ps)) for b in range(len(ps)) if a != b]
        z = torch.cat(ps + inter)
        outs.append(op.out.weight @ z + op.out.bias)
    return torch.stack(outs)


@pytest.mark.parametrize("dim", [2, 7])
def test_circulant_matches_slow_definition(dim):
    torch.manual_seed(0)
    dims = {"c": 4, "a": 2, "b": 3}
    op = F.create_fusion("circulant", dims, 3, dim=dim).double()
    g = torch.Generator().manual_seed(1)
    feats = {m: torch.randn(5, d, generator=g, dtype=torch.float64) for m, d in dims.items()}
    torch.testing.assert_close(op(feats), slow_circulant(op, feats))


def test_circulant_flops_at_two_sizes():
    # d=4, out=5, B=1, widths 2, 3: proj 2*(2+3)*4=40; rfft 2 signals * 5*4*2/2=40;
    # irfft 2 pairs * 20=40; spectral 2 pairs * 4 * 3 bins=24; out 2*(2*2*4)*5=160
    op = F.create_fusion("circulant", {"a": 2, "b": 3}, 5, dim=4)
    assert F.count_flops(op, {"a": torch.randn(1, 2), "b": torch.randn(1, 3)}) == 304

    dims = {"a": 6, "b": 5, "c": 4}
    op = F.create_fusion("circulant", dims, 3, dim=12)
    feats = {m: torch.randn(7, d) for m, d in dims.items()}
    total = F.count_flops(op, feats)
    assert total == hand_flops(op, feats)
    # the stock counter sees only the linear layers; the FFTs and spectral product come on top
    with FlopCounterMode(display=False) as stock, torch.no_grad():
        op(feats)
    linears = linear(7, 15, 12) + linear(7, 9 * 12, 3)
    assert stock.get_total_flops() == linears
    ffts = total - linears - op.interaction_flops(feats)
    assert ffts == fft(7 * 3, 12, real=True) + fft(7 * 6, 12, real=True) > 0
    assert op.interaction_flops(feats) == 7 * 6 * 4 * 7


@pytest.mark.parametrize(
    ("value", "message"),
    [(1, "circulant.dim: must be >= 2, got 1"), (1025, "circulant.dim: must be <= 1024"), ("8", "circulant.dim: expected an integer")],
)
def test_circulant_rejects_bad_dim(value, message):
    with pytest.raises(ValueError, match=message):
        F.create_fusion("circulant", {"a": 2, "b": 3}, 4, dim=value)
    with pytest.raises(ValueError, match=message):
        fusion_ops.circulant.CirculantFusion({"a": 2, "b": 3}, 4, dim=value)
