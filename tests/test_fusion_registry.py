"""Every registered operator, the same checks (timm's test_models.py pattern)."""
from __future__ import annotations

import importlib

import pytest
import torch

import fusion_ops as F
from fusion_ops import auxiliary_loss

DIMS = {2: {"image": 6, "audio": 5}, 3: {"image": 6, "audio": 5, "text": 4}}
OUT = 3


def hand_flops(name):
    """Each operator's test module `tests/test_op_<name>.py` holds its hand count."""
    module = importlib.import_module(f"tests.test_op_{name}")
    return module.hand_flops


def make_feats(in_dims, batch, seed=0, tokens=None):
    g = torch.Generator().manual_seed(seed)
    shape = (lambda d: (batch, d)) if tokens is None else (lambda d: (batch, tokens, d))
    return {m: torch.randn(*shape(d), generator=g) for m, d in in_dims.items()}


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("n_mod", [2, 3])
@pytest.mark.parametrize("name", F.list_fusions())
def test_operator_contract(name, n_mod, batch):
    torch.manual_seed(0)
    op = F.create_fusion(name, DIMS[n_mod], OUT)
    feats = make_feats(DIMS[n_mod], batch)
    out = op(feats)
    assert out.shape == (batch, OUT)
    assert torch.isfinite(out).all()

    # dict order must not matter
    reordered = {m: feats[m] for m in reversed(list(feats))}
    assert list(reordered) != list(feats)
    torch.testing.assert_close(op(reordered), out, rtol=0, atol=0)

    # backward reaches every parameter; training-only ones (a discriminator) through the
    # op's auxiliary loss, which the training loop adds to the task loss
    loss = (out * torch.randn_like(out)).sum()
    aux = auxiliary_loss(op)
    if aux is not None:
        loss = loss + aux
    loss.backward()
    for pname, p in op.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient at {pname}"

    flops = F.count_flops(op, feats)
    assert flops > 0
    assert flops == hand_flops(name)(op, feats)


@pytest.mark.parametrize("name", F.list_fusions())
def test_token_inputs(name):
    """Token taps `(B, T, d)`: token ops use them, the others mean-pool them."""
    op = F.create_fusion(name, DIMS[2], OUT)
    feats = make_feats(DIMS[2], batch=4, tokens=5)
    out = op(feats)
    assert out.shape == (4, OUT) and torch.isfinite(out).all()
    if not op.TOKEN_INPUTS:
        pooled = {m: x.mean(dim=1) for m, x in feats.items()}
        torch.testing.assert_close(out, op(pooled))


@pytest.mark.parametrize("name", F.list_fusions())
def test_operator_rejects_bad_inputs(name):
    with pytest.raises(ValueError, match="in_dims"):
        F.create_fusion(name, {"image": 6}, OUT)
    with pytest.raises(ValueError, match="in_dims"):
        F.create_fusion(name, {"image": 6, "audio": 0}, OUT)
    with pytest.raises(ValueError, match="out_dim"):
        F.create_fusion(name, DIMS[2], 0)
    with pytest.raises(ValueError, match="unknown argument 'nope'"):
        F.create_fusion(name, DIMS[2], OUT, nope=1)


@pytest.mark.parametrize("name", F.list_fusions())
def test_declared_defaults_are_legal(name):
    for arg in F.fusion_args(name):
        assert arg.check(arg.default) == arg.default
    F.create_fusion(name, DIMS[3], OUT, **{a.name: a.default for a in F.fusion_args(name)})


def test_unknown_operator_lists_known_ones():
    with pytest.raises(ValueError) as err:
        F.create_fusion("tensr", DIMS[2], OUT)
    assert "tensr" in str(err.value)
    for known in F.list_fusions():
        assert known in str(err.value)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):

        @F.register_fusion("concat")
        class Again(F.FusionOp):
            pass
