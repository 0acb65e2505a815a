"""adversarial: `z_m = tanh(E_m h_m)`, attention `Σ α_m z_m`, a modality discriminator behind gradient reversal."""
from __future__ import annotations

import pytest
import torch

import fusion_ops as F
import fusion_ops.adversarial  # noqa: F401  (registers "adversarial" until fusion_ops/__init__ imports it)
from fusion_ops import auxiliary_loss
from fusion_ops.adversarial import reverse_gradient
from tests.flops_util import batch_of, linear, matmul


def hand_flops(op, feats) -> int:
    """Inference path only: encoders, `W` and `v` per modality, the weighted sum, the output linear."""
    b, d, n_mod = batch_of(feats), op.args["dim"], len(op.names)
    encoders = sum(linear(b, op.in_dims[m], d) for m in op.names)
    scores = linear(b * n_mod, d, d) + linear(b * n_mod, d, 1)
    return encoders + scores + matmul(b, 1, n_mod, d) + linear(b, d, op.out_dim)


def _vectors(feats):
    return {m: x.mean(dim=1) if x.dim() == 3 else x for m, x in feats.items()}


def slow_adversarial(op, feats):
    """The definition per sample and modality: `(z (B, M, dim), α (B, M), out (B, out_dim))`."""
    feats = _vectors(feats)
    W, v = op.w.weight, op.v.weight[0]
    zs, alphas, outs = [], [], []
    for i in range(batch_of(feats)):
        z = [torch.tanh(enc.weight @ feats[m][i] + enc.bias) for enc, m in zip(op.encoders, sorted(feats), strict=True)]
        s = torch.stack([v @ torch.tanh(W @ zm) for zm in z])
        e = torch.exp(s - s.max())
        alpha = e / e.sum()
        fused = sum(a * zm for a, zm in zip(alpha, z, strict=True))
        zs.append(torch.stack(z))
        alphas.append(alpha)
        outs.append(op.out.weight @ fused + op.out.bias)
    return torch.stack(zs), torch.stack(alphas), torch.stack(outs)


def slow_discriminator_loss(op, z):
    """Mean over samples and modalities of `-log softmax(D(z_bm))[m]`, no reversal layer."""
    first, last = op.discriminator[0], op.discriminator[2]
    terms = []
    for b in range(z.shape[0]):
        for m in range(z.shape[1]):
            logits = last.weight @ torch.relu(first.weight @ z[b, m] + first.bias) + last.bias
            terms.append(torch.logsumexp(logits, dim=0) - logits[m])
    return torch.stack(terms).mean()


def _op_and_feats(dims, batch, dim=5, reversal=1.0, seed=0, tokens=None):
    torch.manual_seed(seed)
    op = F.create_fusion("adversarial", dims, 3, dim=dim, reversal=reversal).double()
    g = torch.Generator().manual_seed(seed + 1)
    feats = {}
    for m, d in dims.items():
        shape = (batch, d) if tokens is None else (batch, tokens[m], d)
        feats[m] = 2 * torch.randn(*shape, generator=g, dtype=torch.float64)
    return op, feats


@pytest.mark.parametrize("tokens", [None, {"c": 3, "a": 1, "b": 4}])
def test_adversarial_matches_slow_definition(tokens):
    op, feats = _op_and_feats({"c": 4, "a": 2, "b": 3}, batch=5, tokens=tokens)
    z, alpha, out = slow_adversarial(op, feats)
    torch.testing.assert_close(op.project(feats), z)
    torch.testing.assert_close(op.weights(op.project(feats)), alpha)
    assert alpha.std(dim=1).min() > 1e-3  # the weights depend on the inputs
    torch.testing.assert_close(op.train()(feats), out)
    torch.testing.assert_close(op.aux_loss, slow_discriminator_loss(op, z))
    torch.testing.assert_close(op.eval()(feats), out)


def test_discriminator_runs_only_for_the_auxiliary_loss_of_a_training_forward():
    op, feats = _op_and_feats({"a": 2, "b": 3}, batch=4)
    calls = []
    op.discriminator.register_forward_hook(lambda *_: calls.append(1))
    out = op.train()(feats)
    assert not calls  # the forward itself is the inference path
    loss = op.aux_loss
    assert loss is not None and loss.dim() == 0 and loss > 0 and len(calls) == 1
    assert op.aux_loss is loss and len(calls) == 1  # computed once per forward
    torch.testing.assert_close(auxiliary_loss(op), op.AUX_WEIGHT * loss)
    op.eval()(feats)
    assert op.aux_loss is None  # a stale training loss must not survive an eval forward
    assert auxiliary_loss(op) is None
    op.train()(feats)
    op.aux_loss = None
    assert op.aux_loss is None
    with pytest.raises(ValueError, match="adversarial.aux_loss"):
        op.aux_loss = out.sum()


@pytest.mark.parametrize("reversal", [0.0, 1.0, 2.5])
def test_gradient_reversal_flips_the_discriminator_gradient_on_the_projections(reversal):
    """Through the reversal layer, d(loss)/dz is -λ times the loss's true derivative (finite differences)."""
    op, feats = _op_and_feats({"a": 2, "b": 3, "c": 4}, batch=3, reversal=reversal)
    z0 = op.project(feats).detach()
    z = z0.clone().requires_grad_(True)
    (reversed_grad,) = torch.autograd.grad(op.discriminator_loss(z), z)

    eps, numeric = 1e-6, torch.zeros_like(z0)
    with torch.no_grad():
        for idx in torch.cartesian_prod(*(torch.arange(s) for s in z0.shape)):
            bump = torch.zeros_like(z0)
            bump[tuple(idx)] = eps
            up, down = slow_discriminator_loss(op, z0 + bump), slow_discriminator_loss(op, z0 - bump)
            numeric[tuple(idx)] = (up - down) / (2 * eps)
    assert numeric.abs().max() > 1e-3  # a real gradient to flip
    torch.testing.assert_close(reversed_grad, -reversal * numeric, rtol=1e-6, atol=1e-8)

    # the discriminator's own gradient is not reversed: it still learns to tell modalities apart
    plain = torch.autograd.grad(slow_discriminator_loss(op, z0), list(op.discriminator.parameters()))
    through = torch.autograd.grad(op.discriminator_loss(z), list(op.discriminator.parameters()))
    for a, b in zip(through, plain, strict=True):
        torch.testing.assert_close(a, b)


def test_reverse_gradient_is_identity_forward():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (g,) = torch.autograd.grad((y * 2).sum(), x)
    torch.testing.assert_close(g, torch.full_like(x, -1.0))


def test_one_step_trains_the_discriminator_and_confuses_it_with_the_encoders():
    """A small SGD step on the auxiliary loss lowers it through D's weights and raises it through the encoders'."""
    op, feats = _op_and_feats({"a": 2, "b": 3}, batch=16, reversal=1.0)
    op.train()(feats)
    before = op.aux_loss.item()
    op.aux_loss.backward()
    lr = 1e-2

    def loss_after_step(modules):
        with torch.no_grad():
            saved = [p.clone() for p in op.parameters()]
            for p in (p for m in modules for p in m.parameters()):
                p -= lr * p.grad
            loss = float(op.discriminator_loss(op.project(feats)))
            for p, s in zip(op.parameters(), saved, strict=True):
                p.copy_(s)
        return loss

    assert loss_after_step([op.discriminator]) < before - 1e-5
    assert loss_after_step([op.encoders]) > before + 1e-5
    # only the auxiliary loss trains the discriminator: the task path never reaches it
    assert all(p.grad is not None for p in op.discriminator.parameters())
    op.zero_grad(set_to_none=True)
    op(feats).sum().backward()
    assert all(p.grad is None for p in op.discriminator.parameters())


def test_adversarial_flops_count_only_the_inference_path():
    op = F.create_fusion("adversarial", {"a": 2, "b": 3}, 5, dim=4)
    # B=1, M=2: encoders 2*(2+3)*4=40, W 2*2*16=64, v 2*2*4=16, Σαz 2*2*4=16, out 2*4*5=40
    feats = {"a": torch.randn(1, 2), "b": torch.randn(1, 3)}
    assert F.count_flops(op, feats) == hand_flops(op, feats) == 176
    # B=3 with tokens (mean-pooled), in training mode: 3 * 176, the discriminator not run
    feats = {"a": torch.randn(3, 4, 2), "b": torch.randn(3, 2, 3)}
    assert F.count_flops(op.train(), feats) == hand_flops(op, feats) == 528


def test_params_leave_out_the_training_only_discriminator():
    """Parameters counted are the inference path's (`TRAINING_ONLY`, see fusion_ops/cost.py)."""
    op = F.create_fusion("adversarial", {"a": 2, "b": 3}, 5, dim=4)
    # encoders (2+1)*4 + (3+1)*4, W 16, v 4, out 4*5+5; discriminator (4+1)*4 + (4+1)*2 on top
    inference = 12 + 16 + 16 + 4 + 25
    assert sum(p.numel() for p in op.parameters()) == inference + 30
    assert F.count_params(op) == inference


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"dim": 0}, "adversarial.dim: must be >= 1, got 0"),
        ({"reversal": -0.5}, "adversarial.reversal: must be >= 0"),
        ({"reversal": 11}, "adversarial.reversal: must be <= 10"),
        ({"reversal": "1"}, "adversarial.reversal: expected a number"),
    ],
)
def test_adversarial_rejects_bad_args(args, message):
    with pytest.raises(ValueError, match=message):
        F.create_fusion("adversarial", {"a": 2, "b": 3}, 4, **args)
    with pytest.raises(ValueError, match=message):
        fusion_ops.adversarial.AdversarialFusion({"a": 2, "b": 3}, 4, **args)
