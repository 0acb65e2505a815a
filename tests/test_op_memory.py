"""memory (MFN): per-modality LSTMs, delta-memory attention over `[c_{t-1}; c_t]`, gated memory `u`."""
from __future__ import annotations

import math

import pytest
import torch

import fusion_ops as F
import fusion_ops.memory  # noqa: F401  (registers "memory" until fusion_ops/__init__ imports it)
from tests.flops_util import batch_of, linear


def _steps(feats) -> tuple[dict[str, int], int]:
    tokens = {m: (x.shape[1] if x.dim() == 3 else 1) for m, x in feats.items()}
    return tokens, max(tokens.values())


def hand_flops(op, feats) -> int:
    """Input projections per original token; recurrent ones, D_a and [D_u; D_γ1; D_γ2] per step;
    the output linear. Elementwise gates and products are not counted."""
    b, k, mem = batch_of(feats), op.args["hidden"], op.args["mem"]
    tokens, steps = _steps(feats)
    n = len(op.names) * k
    inputs = sum(linear(b * tokens[m], op.in_dims[m], 4 * k) for m in op.names)
    recurrent = steps * len(op.names) * linear(b, k, 4 * k)
    per_step = steps * (linear(b, 2 * n, 2 * n) + linear(b, 2 * n, 3 * mem))
    return inputs + recurrent + per_step + linear(b, n + mem, op.out_dim)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@torch.no_grad()
def slow_memory(op, feats):
    """MFN written out per sample, per step, per unit, from the op's weights: `(hs, u, out)` per sample.

    Step t of a modality with T_m tokens reads token floor(t T_m / T), T the longest length;
    h_0 is the op's learnt `h0`, c_0 and u_0 are 0.
    """
    names = sorted(feats)
    k, mem = op.args["hidden"], op.args["mem"]
    seqs = {m: (feats[m] if feats[m].dim() == 3 else feats[m].unsqueeze(1)) for m in names}
    steps = max(x.shape[1] for x in seqs.values())
    D_a, b_a = op.attention.weight, op.attention.bias
    D_u, D_g1, D_g2 = op.memory.weight[:mem], op.memory.weight[mem : 2 * mem], op.memory.weight[2 * mem :]
    b_u, b_g1, b_g2 = op.memory.bias[:mem], op.memory.bias[mem : 2 * mem], op.memory.bias[2 * mem :]
    hs_all, us, outs = [], [], []
    for s in range(batch_of(feats)):
        h = {m: [float(v) for v in op.h0[i]] for i, m in enumerate(names)}
        c = {m: [0.0] * k for m in names}
        u = [0.0] * mem
        for t in range(steps):
            c_prev = [v for m in names for v in c[m]]
            for i, m in enumerate(names):
                x = seqs[m][s, t * seqs[m].shape[1] // steps]
                W_x, b_x = op.input_gates[i].weight, op.input_gates[i].bias
                W_h = op.hidden_gates[i].weight
                pre = [float(W_x[r] @ x + b_x[r]) + sum(float(W_h[r, j]) * h[m][j] for j in range(k)) for r in range(4 * k)]
                ig, fg, gg, og = (pre[q * k : (q + 1) * k] for q in range(4))
                c[m] = [sigmoid(fg[j]) * c[m][j] + sigmoid(ig[j]) * math.tanh(gg[j]) for j in range(k)]
                h[m] = [sigmoid(og[j]) * math.tanh(c[m][j]) for j in range(k)]
            c_hat = torch.tensor(c_prev + [v for m in names for v in c[m]], dtype=torch.float64)
            scores = D_a @ c_hat + b_a
            e = torch.exp(scores - scores.max())
            attended = c_hat * (e / e.sum())
            u_hat = torch.tanh(D_u @ attended + b_u)
            g1 = 1 / (1 + torch.exp(-(D_g1 @ attended + b_g1)))
            g2 = 1 / (1 + torch.exp(-(D_g2 @ attended + b_g2)))
            u = [float(g1[j]) * u[j] + float(g2[j]) * float(u_hat[j]) for j in range(mem)]
        last = torch.tensor([v for m in names for v in h[m]] + u, dtype=torch.float64)
        hs_all.append(torch.tensor([h[m] for m in names], dtype=torch.float64))
        us.append(torch.tensor(u, dtype=torch.float64))
        outs.append(op.out.weight @ last + op.out.bias)
    return torch.stack(hs_all), torch.stack(us), torch.stack(outs)


def _op_and_feats(dims, batch, tokens, hidden=4, mem=5, seed=0):
    """A float64 op and inputs; `tokens[m]` None gives a vector `(B, d_m)`."""
    torch.manual_seed(seed)
    op = F.create_fusion("memory", dims, 3, hidden=hidden, mem=mem).double()
    g = torch.Generator().manual_seed(seed + 1)
    feats = {}
    for m, d in dims.items():
        shape = (batch, d) if tokens[m] is None else (batch, tokens[m], d)
        feats[m] = 2 * torch.randn(*shape, generator=g, dtype=torch.float64)
    return op, feats


@pytest.mark.parametrize(
    "tokens",
    [
        {"a": 4, "b": 4},  # equal lengths
        {"c": 5, "a": 2, "b": None},  # a held over, b a vector, c the longest
    ],
)
def test_memory_matches_step_by_step_reference(tokens):
    dims = {m: d for m, d in zip("cab", (4, 2, 3), strict=False) if m in tokens}
    op, feats = _op_and_feats(dims, batch=3, tokens=tokens)
    hs, u = op.final_states(feats)
    slow_hs, slow_u, slow_out = slow_memory(op, feats)
    torch.testing.assert_close(torch.stack(hs, dim=1), slow_hs)
    torch.testing.assert_close(u, slow_u)
    torch.testing.assert_close(op(feats), slow_out)
    assert u.abs().min() > 1e-4  # the memory was written, not left at u_0 = 0


def test_shorter_sequences_are_held_over_to_the_longest():
    """T_a = 2 against T_b = 4: `[x0, x1]` behaves exactly like `[x0, x0, x1, x1]`; a vector like T copies."""
    op, feats = _op_and_feats({"a": 2, "b": 3, "c": 2}, batch=2, tokens={"a": 2, "b": 4, "c": None})
    a, c = feats["a"], feats["c"]
    expanded = {**feats, "a": a[:, [0, 0, 1, 1]], "c": c.unsqueeze(1).expand(-1, 4, -1)}
    torch.testing.assert_close(op(feats), op(expanded), rtol=0, atol=1e-12)


def test_memory_uses_order_and_every_step():
    """A sequence op: reversing time changes the output, and the first token still reaches it."""
    op, feats = _op_and_feats({"a": 2, "b": 3}, batch=2, tokens={"a": 6, "b": 6})
    out = op(feats)
    reversed_ = {m: x.flip(1) for m, x in feats.items()}
    assert (op(reversed_) - out).abs().max() > 1e-4
    first = feats["a"].clone().requires_grad_(True)
    op({**feats, "a": first}).sum().backward()
    assert first.grad[:, 0].abs().sum() > 0
    # not mean-pooled: permuting the middle tokens (same mean) changes the output
    permuted = {**feats, "b": feats["b"][:, [0, 3, 2, 1, 5, 4]]}
    assert (op(permuted) - out).abs().max() > 1e-4


def test_memory_flops_at_two_sizes():
    op = F.create_fusion("memory", {"a": 2, "b": 3}, 5, hidden=4, mem=6)
    # vectors, B=1 (one step): inputs 2*(2+3)*16=160, recurrent 2*(2*4*16)=256,
    # D_a 2*16*16=512, memory 2*16*18=576, out 2*(8+6)*5=140
    assert F.count_flops(op, {"a": torch.randn(1, 2), "b": torch.randn(1, 3)}) == 1644
    # B=2, T_a=3, T_b=5 (5 steps): inputs 2*2*(3*2+5*3)*16=1344, recurrent 5*2*(2*2*4*16)=2560,
    # D_a 5*2*2*16*16=5120, memory 5*2*2*16*18=5760, out 2*2*14*5=280
    feats = {"a": torch.randn(2, 3, 2), "b": torch.randn(2, 5, 3)}
    assert F.count_flops(op, feats) == 15064
    assert hand_flops(op, feats) == 15064


def test_memory_parameter_count():
    op = F.create_fusion("memory", {"a": 2, "b": 3}, 5, hidden=4, mem=6)
    # LSTMs (2+1)*16 + (3+1)*16 + 2*4*16 + h_0 2*4, D_a 16*16+16, memory 16*18+18, out 14*5+5
    assert F.count_params(op) == 48 + 64 + 128 + 8 + 272 + 306 + 75


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"hidden": 3}, "memory.hidden: must be >= 4, got 3"),
        ({"hidden": 129}, "memory.hidden: must be <= 128"),
        ({"mem": 2.0}, "memory.mem: expected an integer"),
        ({"mem": 0}, "memory.mem: must be >= 4"),
    ],
)
def test_memory_rejects_bad_args(args, message):
    with pytest.raises(ValueError, match=message):
        F.create_fusion("memory", {"a": 2, "b": 3}, 4, **args)
    with pytest.raises(ValueError, match=message):
        fusion_ops.memory.MemoryFusion({"a": 2, "b": 3}, 4, **args)
