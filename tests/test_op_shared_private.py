"""shared_private: `Linear(cat(mean_m S(A_m h_m), P_1 h_1, ..., P_M h_M))` plus an orthogonality penalty."""
from __future__ import annotations

import pytest
import torch

import fusion_ops as F
import fusion_ops.shared_private  # noqa: F401  (registers until fusion_ops/__init__ imports it)
from fusion_ops import auxiliary_loss
from fusion_ops.shared_private import orthogonality_penalty
from tests.flops_util import batch_of, linear


def hand_flops(op, feats) -> int:
    """Inference path only: the penalty is computed when `aux_loss` is read, never in forward."""
    batch, d, n_mod = batch_of(feats), op.args["dim"], len(op.in_dims)
    align = sum(linear(batch, dm, d) for dm in op.in_dims.values())  # A_m
    shared = n_mod * linear(batch, d, d)  # S on every modality
    private = sum(linear(batch, dm, d) for dm in op.in_dims.values())  # P_m
    return align + shared + private + linear(batch, (n_mod + 1) * d, op.out_dim)


def apply(lin, v: list[float]) -> list[float]:
    """`W v + b` with explicit sums."""
    w, b = lin.weight.tolist(), lin.bias.tolist()
    return [sum(w[i][j] * v[j] for j in range(len(v))) + b[i] for i in range(len(w))]


def slow_codes(op, feats):
    """Per modality (sorted) and sample: `s = S(A_m h)`, `p = P_m h`, as nested lists."""
    names = sorted(feats)
    shared, private = [], []
    for i, m in enumerate(names):
        rows = [feats[m][b].tolist() for b in range(batch_of(feats))]
        shared.append([apply(op.shared, apply(op.align[i], h)) for h in rows])
        private.append([apply(op.private[i], h) for h in rows])
    return shared, private


def slow_output(op, feats) -> torch.Tensor:
    shared, private = slow_codes(op, feats)
    n_mod, d = len(shared), op.args["dim"]
    out = []
    for b in range(batch_of(feats)):
        mean_s = [sum(shared[m][b][k] for m in range(n_mod)) / n_mod for k in range(d)]
        fused = mean_s + [v for m in range(n_mod) for v in private[m][b]]
        out.append(apply(op.out, fused))
    return torch.tensor(out, dtype=torch.float64)


def slow_penalty(shared, private) -> float:
    """`(1/M) Σ_m Σ_ij (Σ_b S_m[b,i] P_m[b,j])² / B²` with explicit loops."""
    n_mod, batch, d = len(shared), len(shared[0]), len(shared[0][0])
    total = 0.0
    for m in range(n_mod):
        for i in range(d):
            for j in range(d):
                total += sum(shared[m][b][i] * private[m][b][j] for b in range(batch)) ** 2
    return total / n_mod / batch**2


def feats64(dims, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=g, dtype=torch.float64) for m, d in dims.items()}


@pytest.mark.parametrize("dims", [{"b": 3, "a": 2}, {"c": 4, "a": 2, "b": 3}])
def test_shared_private_output_and_penalty_match_the_slow_formulas(dims):
    torch.manual_seed(0)
    op = F.create_fusion("shared_private", dims, 3, dim=4).double()
    feats = feats64(dims, 5)
    out = op(feats)
    torch.testing.assert_close(out, slow_output(op, feats), rtol=1e-12, atol=1e-12)
    expected = slow_penalty(*slow_codes(op, feats))
    assert expected > 0
    assert op.aux_loss.item() == pytest.approx(expected, rel=1e-12)


def block_op_and_feats():
    """Weights and data with `S_mᵀ P_m = 0` exactly: shared reads feature 0, private feature 1,
    and each sample has only one of the two non-zero, so every product `s_b p_bᵀ` is 0."""
    dims = {"a": 2, "b": 2}
    op = F.create_fusion("shared_private", dims, 3, dim=4).double()
    with torch.no_grad():
        for lin in [*op.align, op.shared, *op.private]:
            lin.bias.zero_()
        for a, p in zip(op.align, op.private, strict=True):
            a.weight[:, 1] = 0.0
            p.weight[:, 0] = 0.0
    feats = feats64(dims, 6, seed=1)
    for x in feats.values():
        x[:3, 1] = 0.0  # samples 0-2: only the shared path sees them
        x[3:, 0] = 0.0  # samples 3-5: only the private path
    return op, feats


def test_penalty_is_zero_exactly_when_codes_are_orthogonal():
    op, feats = block_op_and_feats()
    op(feats)
    assert op.aux_loss.item() == 0.0
    # one sample seen by both paths breaks orthogonality
    feats["b"][0, 1] = 0.5
    op(feats)
    assert op.aux_loss.item() > 1e-6
    # a random projection onto the orthogonal complement: zero up to rounding
    g = torch.Generator().manual_seed(2)
    s = torch.randn(8, 4, generator=g, dtype=torch.float64)
    p0 = torch.randn(8, 4, generator=g, dtype=torch.float64)
    p = p0 - s @ torch.linalg.solve(s.T @ s, s.T @ p0)
    assert orthogonality_penalty([s], [p]).item() < 1e-24
    assert orthogonality_penalty([s], [p0]).item() > 1e-2


def test_aux_loss_only_after_a_training_forward_and_outside_the_counted_path():
    torch.manual_seed(0)
    dims = {"a": 3, "b": 4}
    op = F.create_fusion("shared_private", dims, 2)
    assert op.aux_loss is None and auxiliary_loss(op) is None  # nothing before a forward
    feats = {m: torch.randn(5, d) for m, d in dims.items()}
    op(feats)
    torch.testing.assert_close(auxiliary_loss(op), 0.1 * op.aux_loss)  # AUX_WEIGHT by default
    assert op.aux_loss.requires_grad
    op.eval()
    op(feats)
    assert op.aux_loss is None  # inference keeps no codes
    op.train()
    assert F.count_flops(op, feats) == hand_flops(op, feats)  # training mode: still the inference count
    with pytest.raises(ValueError, match="aux_loss"):
        op.aux_loss = torch.tensor(1.0)
    op.aux_loss = None
    assert op.aux_loss is None


def cosine_cross(op, feats) -> float:
    """Scale-free `‖SᵀP‖_F / (‖S‖_F ‖P‖_F)`, mean over modalities: shrinking codes cannot lower it."""
    with torch.no_grad():
        s, p = op.codes(feats)
    return sum(((si.T @ pi).norm() / (si.norm() * pi.norm())).item() for si, pi in zip(s, p, strict=True)) / len(s)


def test_training_with_the_penalty_makes_private_codes_orthogonal():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    dims = {"a": 6, "b": 5}
    feats = {m: torch.randn(64, d, generator=g) for m, d in dims.items()}
    target = torch.randn(64, 3, generator=g)
    op = F.create_fusion("shared_private", dims, 3, dim=8)
    op(feats)
    before, cos_before = op.aux_loss.item(), cosine_cross(op, feats)
    opt = torch.optim.Adam(op.parameters(), lr=1e-2)
    for _ in range(100):
        loss = (op(feats) - target).pow(2).mean() + auxiliary_loss(op, weight=10.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    op(feats)
    assert op.aux_loss.item() < 0.01 * before
    assert cosine_cross(op, feats) < 0.2 * cos_before


def test_shared_projection_is_one_module_for_all_modalities():
    op = F.create_fusion("shared_private", {"c": 4, "a": 2, "b": 3}, 5, dim=6)
    assert F.count_params(op) == (9 * 6 + 3 * 6) + (6 * 6 + 6) + (9 * 6 + 3 * 6) + (4 * 6 * 5 + 5)
    assert op.align[0].in_features == 2 and op.private[2].in_features == 4  # sorted: a, b, c


def test_shared_private_rejects_bad_arguments():
    dims = {"a": 2, "b": 3}
    with pytest.raises(ValueError, match=r"shared_private\.dim: must be >= 4"):
        F.create_fusion("shared_private", dims, 4, dim=3)
    with pytest.raises(ValueError, match=r"shared_private\.dim: must be <= 256"):
        F.create_fusion("shared_private", dims, 4, dim=257)
    with pytest.raises(ValueError, match=r"shared_private\.dim: expected an integer"):
        F.create_fusion("shared_private", dims, 4, dim="8")


def test_shared_private_flops_at_two_sizes():
    for dims, d, out, batch in [({"a": 2, "b": 3}, 4, 4, 1), ({"a": 9, "b": 5, "c": 7}, 8, 5, 3)]:
        op = F.create_fusion("shared_private", dims, out, dim=d)
        feats = {m: torch.randn(batch, d_m) for m, d_m in dims.items()}
        n = len(dims)
        expected = 2 * batch * (2 * sum(dims.values()) * d + n * d * d + (n + 1) * d * out)
        assert F.count_flops(op, feats) == expected
    # second size written out: 2*3*(2*21*8 + 3*64 + 4*8*5)
    assert expected == 6 * (336 + 192 + 160)
