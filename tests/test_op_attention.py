"""attention: `s = vᵀ tanh(W p)`, `α = softmax(s)` over modalities or tokens, `Linear(Σ α p)`."""
from __future__ import annotations

import pytest
import torch

import fusion_ops as F
import fusion_ops.attention  # noqa: F401  (registers "attention" until fusion_ops/__init__ imports it)
from tests.flops_util import batch_of, linear, matmul


def hand_flops(op, feats) -> int:
    """Projections per token, `W` and `v` per candidate, the weighted sum, the output linear."""
    b, d = batch_of(feats), op.args["dim"]
    tokens = {m: (x.shape[1] if x.dim() == 3 else 1) for m, x in feats.items()}
    n = sum(tokens.values())
    proj = sum(linear(b * tokens[m], op.in_dims[m], d) for m in op.names)
    scores = linear(b * n, d, d) + linear(b * n, d, 1)
    return proj + scores + matmul(b, 1, n, d) + linear(b, d, op.out_dim)


def slow_attention(op, feats):
    """The definition with loops over samples, modalities and tokens: `(α (B, N), out (B, out_dim))`."""
    W, v = op.w.weight, op.v.weight[0]
    batch = batch_of(feats)
    alphas, outs = [], []
    for i in range(batch):
        ps = []
        for lin, m in zip(op.proj, sorted(feats), strict=True):
            x = feats[m][i]
            for tok in x if x.dim() == 2 else [x]:
                ps.append(lin.weight @ tok + lin.bias)
        s = torch.stack([v @ torch.tanh(W @ p) for p in ps])
        e = torch.exp(s - s.max())
        alpha = e / e.sum()
        fused = sum(a * p for a, p in zip(alpha, ps, strict=True))
        alphas.append(alpha)
        outs.append(op.out.weight @ fused + op.out.bias)
    return torch.stack(alphas), torch.stack(outs)


def _op_and_feats(dims, batch, tokens=None, dim=5, seed=0):
    torch.manual_seed(seed)
    op = F.create_fusion("attention", dims, 3, dim=dim).double()
    g = torch.Generator().manual_seed(seed + 1)
    feats = {}
    for m, d in dims.items():
        shape = (batch, d) if tokens is None else (batch, tokens[m], d)
        feats[m] = 2 * torch.randn(*shape, generator=g, dtype=torch.float64)
    return op, feats


@pytest.mark.parametrize("tokens", [None, {"b": 3, "a": 1, "c": 4}])
def test_attention_matches_slow_definition(tokens):
    op, feats = _op_and_feats({"c": 4, "a": 2, "b": 3}, batch=6, tokens=tokens)
    alpha = op.weights(feats)
    n = 3 if tokens is None else 8
    assert alpha.shape == (6, n)
    assert (alpha >= 0).all()
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(6, dtype=torch.float64))
    # not uniform: the weights depend on the inputs
    assert alpha.std(dim=1).min() > 1e-3

    slow_alpha, slow_out = slow_attention(op, feats)
    torch.testing.assert_close(alpha, slow_alpha)
    torch.testing.assert_close(op(feats), slow_out)


def test_mixed_vector_and_token_inputs():
    """A vector tap is one candidate among the tokens of the other modalities."""
    op, feats = _op_and_feats({"a": 2, "b": 3}, batch=4, tokens={"a": 1, "b": 5})
    feats["a"] = feats["a"][:, 0]  # (B, 2): a vector
    assert op.weights(feats).shape == (4, 6)
    _, slow_out = slow_attention(op, feats)
    torch.testing.assert_close(op(feats), slow_out)
    # the token path is used as such, not mean-pooled
    pooled = {m: x.mean(dim=1) if x.dim() == 3 else x for m, x in feats.items()}
    assert not torch.allclose(op(feats), op(pooled))


def test_attention_flops_at_two_sizes():
    # d=4, out=5, B=1, two vectors of widths 2, 3 (N=2):
    # proj 2*(2+3)*4=40, W 2*2*4*4=64, v 2*2*4=16, Σαp 2*2*4=16, out 2*4*5=40
    op = F.create_fusion("attention", {"a": 2, "b": 3}, 5, dim=4)
    assert F.count_flops(op, {"a": torch.randn(1, 2), "b": torch.randn(1, 3)}) == 176
    # B=2, tokens T_a=3, T_b=4 (N=7): proj 2*2*(3*2+4*3)*4=288, W 2*2*7*16=448,
    # v 2*2*7*4=112, Σαp 2*2*7*4=112, out 2*2*4*5=80
    feats = {"a": torch.randn(2, 3, 2), "b": torch.randn(2, 4, 3)}
    assert F.count_flops(op, feats) == 1040
    assert hand_flops(op, feats) == 1040


@pytest.mark.parametrize(
    ("value", "message"),
    [(0, "attention.dim: must be >= 1, got 0"), (513, "attention.dim: must be <= 512"), (2.5, "attention.dim: expected an integer")],
)
def test_attention_rejects_bad_dim(value, message):
    with pytest.raises(ValueError, match=message):
        F.create_fusion("attention", {"a": 2, "b": 3}, 4, dim=value)
    with pytest.raises(ValueError, match=message):
        fusion_ops.attention.AttentionFusion({"a": 2, "b": 3}, 4, dim=value)
