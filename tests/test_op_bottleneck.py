"""bottleneck (MBT): per-modality transformers that exchange only through shared tokens."""
from __future__ import annotations

import math

import pytest
import torch

import fusion_ops as F
import fusion_ops.bottleneck  # noqa: F401  (registers "bottleneck" until fusion_ops/__init__ imports it)
from tests.flops_util import batch_of, linear, matmul

SMALL = {"dim": 8, "heads": 2, "mlp_ratio": 2, "n_tokens": 3}


def make(in_dims, **args):
    torch.manual_seed(0)
    return F.create_fusion("bottleneck", in_dims, 3, **{**SMALL, **args}).double()


def token_feats(op, lengths, batch=2, seed=1):
    """Tokens `(B, T_m, d_m)` with a different length per modality (1 = a vector tap)."""
    g = torch.Generator().manual_seed(seed)
    return {
        m: torch.randn(batch, t, op.in_dims[m], generator=g, dtype=torch.float64, requires_grad=True)
        if t > 1
        else torch.randn(batch, op.in_dims[m], generator=g, dtype=torch.float64, requires_grad=True)
        for m, t in zip(op.names, lengths, strict=True)
    }


# ---- FLOPs -----------------------------------------------------------------------


def block_flops(batch: int, seq: int, dim: int, heads: int, hidden: int) -> int:
    """Pre-LN block on `(batch, seq, dim)`: QKV, Q K^T, A V, output projection, MLP."""
    hd = dim // heads
    return (
        linear(batch * seq, dim, 3 * dim)
        + matmul(batch * heads, seq, hd, seq)  # Q K^T
        + matmul(batch * heads, seq, seq, hd)  # A V
        + linear(batch * seq, dim, dim)
        + linear(batch * seq, dim, hidden)
        + linear(batch * seq, hidden, dim)
    )


def hand_flops(op, feats) -> int:
    a = op.args
    dim, batch = a["dim"], batch_of(feats)
    total = linear(batch, (len(op.names) + 1) * dim, op.out_dim)  # read-out head
    for m in op.names:
        t = feats[m].shape[1] if feats[m].dim() == 3 else 1
        total += linear(batch * t, op.in_dims[m], dim)  # input projection
        for layer in range(a["layers"]):
            seq = 1 + t + (a["n_tokens"] if layer >= a["fusion_layer"] else 0)  # class + own (+ bottleneck)
            total += block_flops(batch, seq, dim, a["heads"], a["mlp_ratio"] * dim)
    return total


def test_flops_of_a_tiny_case_by_hand():
    # D=4, 2 heads, 1 fusing layer, n_b=1, MLP width 4, vector taps a:2, b:3, batch 1, out 1.
    # projections 2*2*4 + 2*3*4 = 40; per modality S = cls + x + b = 3 tokens:
    # QKV 2*3*4*12 = 288, QK^T 2*2*3*2*3 = 72, AV 72, proj 2*3*4*4 = 96, MLP 2*(2*3*4*4) = 192 -> 720;
    # head 2*(3*4)*1 = 24.  Total 40 + 2*720 + 24 = 1504.
    op = F.create_fusion("bottleneck", {"a": 2, "b": 3}, 1, dim=4, heads=2, layers=1, fusion_layer=0,
                         n_tokens=1, mlp_ratio=1)
    feats = {"a": torch.randn(1, 2), "b": torch.randn(1, 3)}
    assert F.count_flops(op, feats) == 1504 == hand_flops(op, feats)


@pytest.mark.parametrize(
    "dims, args, lengths, batch",
    [
        ({"a": 5, "b": 7}, {"dim": 8, "heads": 2, "layers": 2, "fusion_layer": 1, "n_tokens": 2}, (3, 1), 1),
        ({"a": 6, "b": 4, "c": 9}, {"dim": 24, "heads": 3, "layers": 3, "fusion_layer": 0, "n_tokens": 5,
                                    "mlp_ratio": 3}, (4, 2, 6), 5),
    ],
)
def test_flops_match_hand_count_at_two_sizes(dims, args, lengths, batch):
    op = F.create_fusion("bottleneck", dims, 4, **args)
    feats = {m: torch.randn(batch, t, d) if t > 1 else torch.randn(batch, d)
             for (m, d), t in zip(dims.items(), lengths, strict=True)}
    n = F.count_flops(op, feats)
    assert n == hand_flops(op, feats)
    late = F.create_fusion("bottleneck", dims, 4, **{**args, "fusion_layer": args["layers"]})
    # each fusing layer adds n_b tokens per modality, so late fusion is strictly cheaper
    assert F.count_flops(late, feats) == hand_flops(late, feats) < n


# ---- the definition, written the slow way: one joint sequence and an explicit mask --------


def layer_norm(x, norm):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def block_ref(blk, seq, allowed):
    """Pre-LN block on `(B, S, D)`; query token i may attend key token j iff `allowed[i, j]`."""
    d = seq.shape[-1]
    hd = d // blk.heads
    w, c = blk.qkv.weight, blk.qkv.bias
    a = layer_norm(seq, blk.norm1)
    q, k, v = (a @ w[i * d:(i + 1) * d].T + c[i * d:(i + 1) * d] for i in range(3))
    heads = []
    for h in range(blk.heads):
        s = slice(h * hd, (h + 1) * hd)
        logits = (q[..., s] @ k[..., s].transpose(1, 2)) / math.sqrt(hd)
        heads.append(torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1) @ v[..., s])
    x = seq + torch.cat(heads, dim=-1) @ blk.proj.weight.T + blk.proj.bias
    hidden = layer_norm(x, blk.norm2) @ blk.fc1.weight.T + blk.fc1.bias
    gelu = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    return x + gelu @ blk.fc2.weight.T + blk.fc2.bias


def reference(op, feats, leak=False):
    """MBT over ONE sequence of all modalities' tokens plus the bottleneck.

    Modality m's layer runs on the whole sequence under a mask: its tokens (and, from
    the fusion layer on, the bottleneck) see only its own tokens and the bottleneck.
    `leak=True` lets them see everything, to show the mask is not vacuous.
    """
    n_mod, n_b = len(op.names), op.args["n_tokens"]
    batch = batch_of(feats)
    xs = []
    for i, m in enumerate(op.names):
        x = feats[m] if feats[m].dim() == 3 else feats[m][:, None]
        cls = op.cls[i].expand(batch, 1, -1)
        xs.append(torch.cat([cls, x @ op.proj[i].weight.T + op.proj[i].bias], dim=1))
    b = op.bottleneck.expand(batch, -1, -1)
    for layer in range(op.args["layers"]):
        fused = layer >= op.args["fusion_layer"]
        seq = torch.cat([*xs, b], dim=1)
        group = torch.cat([torch.full((x.shape[1],), i) for i, x in enumerate(xs)] + [torch.full((n_b,), n_mod)])
        outs_x, outs_b = [], []
        for m in range(n_mod):
            own = (group == m) | ((group == n_mod) & fused)
            allowed = (own[:, None] & own[None, :]) | torch.eye(len(group), dtype=torch.bool)  # others: discarded
            if leak and fused:
                allowed = own[:, None] | torch.eye(len(group), dtype=torch.bool)
            out = block_ref(op.blocks[m][layer], seq, allowed)
            outs_x.append(out[:, group == m])
            outs_b.append(out[:, group == n_mod])
        xs = outs_x
        if fused:
            b = sum(outs_b) / n_mod
    pooled = [layer_norm(x[:, 0], op.norms[i]) for i, x in enumerate(xs)]
    pooled.append(layer_norm(b.mean(dim=1), op.norms[n_mod]))
    return torch.cat(pooled, dim=1) @ op.head.weight.T + op.head.bias


@pytest.mark.parametrize("fusion_layer", [0, 1, 3])
def test_matches_masked_joint_attention(fusion_layer):
    op = make({"a": 5, "b": 3, "c": 4}, layers=3, fusion_layer=fusion_layer)
    feats = token_feats(op, (3, 1, 5))
    out = op(feats)
    torch.testing.assert_close(out, reference(op, feats), rtol=1e-12, atol=1e-12)
    if fusion_layer < 3:
        assert (out - reference(op, feats, leak=True)).abs().max() > 1e-3


def test_output_does_not_depend_on_dict_order_or_modality_names_order():
    op = make({"b": 4, "a": 5})
    feats = token_feats(op, (2, 3))
    torch.testing.assert_close(op(dict(reversed(list(feats.items())))), op(feats), rtol=0, atol=0)


# ---- information flow ---------------------------------------------------------------


def grad_of(y, x):
    """d <w, y> / dx for a fixed random w; exactly zero where y does not depend on x."""
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    (g,) = torch.autograd.grad((w * y).sum(), x, retain_graph=True, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


LAYERS = 4


@pytest.mark.parametrize("fusion_layer", range(LAYERS + 1))
def test_cross_modal_gradient_only_after_the_fusion_layer(fusion_layer):
    op = make({"a": 5, "b": 3, "c": 4}, layers=LAYERS, fusion_layer=fusion_layer)
    feats = token_feats(op, (3, 1, 2))
    states = op.forward_tokens(feats)
    assert len(states) == LAYERS + 1
    for s, (xs, b) in enumerate(states):
        for i, mi in enumerate(op.names):
            for mj in op.names:
                if mj == mi:
                    continue
                g = grad_of(xs[i], feats[mj])
                # the first fusing layer reads the learned bottleneck; the next one reads
                # the bottleneck that the other modalities wrote
                if s >= fusion_layer + 2:
                    assert g.abs().sum() > 0, (s, mi, mj)
                else:
                    assert torch.count_nonzero(g) == 0, (s, mi, mj)
        for m in op.names:
            g = grad_of(b, feats[m])
            assert (g.abs().sum() > 0) == (s >= fusion_layer + 1), (s, m)


@pytest.mark.parametrize("fusion_layer", [0, 2])
def test_cutting_the_bottleneck_cuts_every_cross_modal_path(fusion_layer):
    op = make({"a": 5, "b": 3, "c": 4}, layers=LAYERS, fusion_layer=fusion_layer)
    feats = token_feats(op, (3, 1, 2))
    seen = []

    def detach(layer, b):
        seen.append(layer)
        return b.detach()

    states = op.forward_tokens(feats, bottleneck_hook=detach)
    assert seen == list(range(fusion_layer, LAYERS))
    for xs, _ in states:
        for i, mi in enumerate(op.names):
            for mj in op.names:
                if mj != mi:
                    assert torch.count_nonzero(grad_of(xs[i], feats[mj])) == 0

    # by value: with a zeroed bottleneck, changing "b" leaves the other modalities' tokens bit-identical
    zero = lambda layer, b: torch.zeros_like(b)  # noqa: E731
    changed = {**feats, "b": feats["b"] + 1.0}
    for hook in (zero, None):
        before = op.forward_tokens(feats, bottleneck_hook=hook)
        after = op.forward_tokens(changed, bottleneck_hook=hook)
        for s in range(LAYERS + 1):
            for i in (0, 2):  # "a" and "c"
                same = torch.equal(before[s].tokens[i], after[s].tokens[i])
                assert same == (hook is zero or s < fusion_layer + 2), (hook, s, i)


def test_bottleneck_and_class_tokens_are_learned():
    op = make({"a": 5, "b": 3})
    assert op.bottleneck.shape == (1, SMALL["n_tokens"], SMALL["dim"])
    assert op.cls.shape == (2, 1, SMALL["dim"])
    out = op(token_feats(op, (1, 1)))
    out.sum().backward()
    assert op.bottleneck.grad.abs().sum() > 0 and op.cls.grad.abs().sum() > 0


def test_init_std_of_the_bottleneck():
    torch.manual_seed(0)
    op = F.create_fusion("bottleneck", {"a": 2, "b": 2}, 1, dim=512, n_tokens=64)
    assert abs(op.bottleneck.std().item() - 0.02) < 0.001
    assert abs(op.bottleneck.mean().item()) < 0.001


# ---- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, name",
    [
        ({"dim": 16, "heads": 3}, "bottleneck.heads"),
        ({"layers": 2, "fusion_layer": 3}, "bottleneck.fusion_layer"),
        ({"n_tokens": 0}, "bottleneck.n_tokens"),
        ({"dim": 2}, "bottleneck.dim"),
        ({"layers": 0}, "bottleneck.layers"),
        ({"mlp_ratio": 1.5}, "bottleneck.mlp_ratio"),
    ],
)
def test_bad_arguments_name_the_argument(args, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        F.create_fusion("bottleneck", {"a": 2, "b": 3}, 1, **args)


def test_edge_arguments_are_legal():
    for args in ({"layers": 3, "fusion_layer": 3}, {"fusion_layer": 0}, {"dim": 4, "heads": 4}):
        op = F.create_fusion("bottleneck", {"a": 2, "b": 3}, 1, **args)
        assert op({"a": torch.randn(2, 2), "b": torch.randn(2, 4, 3)}).shape == (2, 1)
