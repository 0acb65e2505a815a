"""The training recipe of `search.training.train.fit`: step budget, schedule, minimum steps and patience,
full-batch steps, gradient clipping, divergence, and dropout in `FusionHead`.

Tiny synthetic models and data, so every rule is checked exactly and fast.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

import search.training.train as T
from fusion_ops.cost import count_flops, count_params
from fusion_ops.model import FusionHead
from search.training.pretrain import PretrainConfig
from search.training.train import TrainConfig, fit, lr_at, step_budget
from spaces import ConfigError
from spaces.spec import ArchSpec, CellSpec


class Linear(nn.Module):
    """`{"x": (B, d)} -> (B, C)`, counting training-mode forward calls and the samples they saw."""

    def __init__(self, d: int = 4, c: int = 2) -> None:
        super().__init__()
        self.lin = nn.Linear(d, c)
        self.batches: list[int] = []

    def forward(self, xs):
        if self.training:
            self.batches.append(len(xs["x"]))
        return self.lin(xs["x"])


def data(n: int, d: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return {"x": x}, (x[:, 0] > 0).long()


def plain(**kw) -> TrainConfig:
    """The new defaults with no warm-up, clipping or full batch unless asked."""
    return dataclasses.replace(TrainConfig(), **{"warmup": 0.0, "grad_clip": 0.0, "full_batch": 0, **kw})


# ---------------------------------------------------------------- config
def test_new_fields_validate_with_errors_naming_the_key():
    assert TrainConfig.from_dict({"schedule": "constant", "grad_clip": 0, "full_batch": 0}).schedule == "constant"
    assert TrainConfig.from_dict({"warmup": 0, "dropout": 0.5, "max_steps": 0}).dropout == 0.5
    for doc, message in (
        ({"grad_clip": -1}, "train.grad_clip: must be >= 0, got -1"),
        ({"warmup": 1.0}, "train.warmup: must be < 1, got 1.0"),
        ({"dropout": 1}, "train.dropout: must be < 1, got 1"),
        ({"dropout": "high"}, "train.dropout: expected a number, got 'high'"),
        ({"schedule": "linear"}, "train.schedule: unknown schedule 'linear'; known: cosine, constant"),
        ({"min_steps": -5}, "train.min_steps: expected an integer >= 0, got -5"),
        ({"max_steps": 1.5}, "train.max_steps: expected an integer >= 0, got 1.5"),
        ({"eval_every": True}, "train.eval_every: expected an integer >= 0, got True"),
        ({"full_batch": -1}, "train.full_batch: expected an integer >= 0, got -1"),
    ):
        with pytest.raises(ConfigError) as err:
            TrainConfig.from_dict(doc)
        assert str(err.value) == message


def test_pretraining_keeps_its_per_epoch_recipe():
    p = PretrainConfig()
    assert (p.epochs, p.lr, p.weight_decay, p.patience) == (30, 3e-3, 1e-4, 5)
    assert (p.max_steps, p.min_steps, p.eval_every, p.full_batch, p.schedule, p.warmup, p.grad_clip) == (
        0, 0, 0, 0, "constant", 0.0, 0.0)
    with pytest.raises(ConfigError, match=r"^backbones\.pretrain\.grad_clip: must be >= 0, got -1$"):
        PretrainConfig.from_dict({"grad_clip": -1})


def _one_step_from(w0: float, cfg: TrainConfig) -> float:
    """A weight with zero loss gradient after one step of `T.optimizer_for`: only weight decay moves it."""
    w = nn.Parameter(torch.tensor([w0]))
    opt = T.optimizer_for([w], cfg)
    (w * 0.0).sum().backward()
    opt.step()
    return float(w.detach())


def test_weight_decay_is_coupled_l2_for_adam_and_decoupled_for_adamw():
    """The defining formulas, one step from w = 2 with a zero loss gradient. Adam (coupled L2): the
    gradient becomes g = wd * w and the first bias-corrected step is lr * g / (|g| + eps) ~= lr, whatever
    wd is. AdamW (decoupled): w <- w * (1 - lr * wd), and Adam's moments stay zero."""
    lr, wd, w0 = 0.1, 0.01, 2.0
    g = wd * w0
    adam = _one_step_from(w0, plain(lr=lr, weight_decay=wd))
    assert adam == pytest.approx(w0 - lr * g / (math.sqrt(g * g) + 1e-8), rel=1e-6)
    adamw = _one_step_from(w0, plain(lr=lr, weight_decay=wd, optimizer="adamw"))
    assert adamw == pytest.approx(w0 * (1 - lr * wd), rel=1e-6)
    assert TrainConfig().optimizer == "adam"  # the default the recipe benchmark kept (RESULTS.md)
    with pytest.raises(ConfigError, match=r"^train\.optimizer: unknown optimizer 'sgd'; known: adam, adamw$"):
        TrainConfig.from_dict({"optimizer": "sgd"})


# ---------------------------------------------------------------- schedule
def test_lr_warms_up_linearly_then_decays_by_cosine_step_by_step():
    cfg = plain(lr=0.1, warmup=0.1, epochs=20, full_batch=100)  # full batch: one step an epoch, budget 20
    assert step_budget(50, cfg) == 20 and step_budget(50, dataclasses.replace(cfg, max_steps=7)) == 7
    assert step_budget(500, dataclasses.replace(cfg, batch_size=128, max_steps=0)) == 20 * 4
    want = [0.1 * s / 2 for s in (1, 2)]  # w = round(0.1 * 20) = 2 warm-up steps
    want += [0.1 * 0.5 * (1 + math.cos(math.pi * (s - 3) / 18)) for s in range(3, 21)]
    assert [lr_at(s, 20, cfg) for s in range(1, 21)] == pytest.approx(want, rel=1e-12)
    assert want[2] == pytest.approx(0.1) and 0 < want[-1] < 0.001
    assert [lr_at(s, 20, dataclasses.replace(cfg, schedule="constant")) for s in (1, 10, 20)] == [0.1] * 3
    # and the optimiser really steps with them
    seen: list[float] = []
    real = T.optimizer_for

    def spy(params, c):
        opt, step = real(params, c), None

        def spied() -> None:
            seen.append(opt.lr)
            step()

        opt.step, step = spied, opt.step
        return opt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "optimizer_for", spy)
        r = fit(Linear(), data(50), data(20, seed=1), dataclasses.replace(cfg, min_steps=20))
    assert r.steps == 20 and seen == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------- minimum steps and patience
def test_no_early_stop_before_min_steps_then_patience_evaluations_after_it(monkeypatch):
    evals: list[int] = []
    model = Linear()

    def flat(m, split):
        evals.append(len(model.batches))  # steps taken so far
        return 0.5  # never improves after the first evaluation

    monkeypatch.setattr(T, "accuracy", flat)
    cfg = plain(epochs=1000, max_steps=0, min_steps=100, eval_every=10, patience=3, full_batch=64)
    r = fit(model, data(50), data(20, seed=1), cfg)
    # one full-batch step an epoch: val every 10 steps; stale from step 110 on: stops at 130
    assert evals == list(range(10, 131, 10)) and r.steps == 130 and r.epochs == 130 and r.best_epoch == 10
    assert r.status == "ok" and r.val_accuracy == 0.5
    evals.clear()
    r = fit(Linear(), data(50), data(20, seed=1), dataclasses.replace(cfg, min_steps=0))
    assert r.steps == 40  # the old rule: patience counts from the best


def test_eval_every_larger_than_an_epoch_measures_at_epoch_ends(monkeypatch):
    evals: list[int] = []
    model = Linear()
    monkeypatch.setattr(T, "accuracy", lambda m, split: evals.append(len(model.batches)) or 0.5)
    cfg = plain(epochs=6, max_steps=0, min_steps=0, eval_every=5, patience=100, batch_size=10)
    r = fit(model, data(40), data(20, seed=1), cfg)  # 4 steps an epoch, 24 in all
    assert evals == [8, 16, 24] and r.steps == 24 and r.epochs == 6


# ---------------------------------------------------------------- full batch
def test_small_training_sets_take_full_batch_steps():
    model = Linear()
    r = fit(model, data(300), data(20, seed=1), plain(epochs=5, full_batch=300, min_steps=5, max_steps=0))
    assert model.batches == [300] * 5 and r.steps == r.epochs == 5
    model = Linear()
    fit(model, data(301), data(20, seed=1), plain(epochs=1, full_batch=300, batch_size=128, min_steps=5))
    assert model.batches == [128, 128, 45]


# ---------------------------------------------------------------- gradient clipping
@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_grad_clip_bounds_the_global_norm_the_optimiser_sees(monkeypatch, clip):
    norms: list[float] = []
    real = T.optimizer_for

    def spy(params, c):
        opt, step = real(params, c), None

        def spied() -> None:
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad)
                                                                     for p in opt.params if p.grad is not None]))))
            step()

        opt.step, step = spied, opt.step
        return opt

    monkeypatch.setattr(T, "optimizer_for", spy)
    xs, y = data(64)
    xs = {"x": xs["x"] * 1000}  # huge inputs: huge gradients
    fit(Linear(), (xs, y), data(20, seed=1), plain(epochs=3, grad_clip=clip, min_steps=3, full_batch=64))
    assert len(norms) == 3
    if clip:
        assert max(norms) <= clip * (1 + 1e-5)
    else:
        assert max(norms) > 10


# ---------------------------------------------------------------- divergence
def test_a_huge_learning_rate_diverges_and_says_why():
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    net = _Wrap(model)
    r = fit(net, data(200), data(50, seed=1), plain(lr=1e4, epochs=50, min_steps=50))
    assert r.status == "diverged", r
    assert ("loss grew to" in r.reason or "weights blew up" in r.reason or "loss became" in r.reason), r.reason
    ok = fit(_Wrap(nn.Sequential(nn.Linear(4, 2))), data(200), data(50, seed=1), plain(epochs=20))
    assert ok.status == "ok" and ok.reason == ""


class _Wrap(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, xs):
        return self.net(xs["x"])


def test_weights_past_the_limit_count_as_diverged():
    p = nn.Parameter(torch.tensor([1.0, -2e6]))
    assert T._weights_check([p]) == "weights blew up (max |w| 2e+06)"
    assert T._weights_check([nn.Parameter(torch.tensor([float("inf")]))]) == "weights became non-finite"
    assert T._weights_check([nn.Parameter(torch.ones(3))]) == ""


# ---------------------------------------------------------------- dropout
def test_dropout_changes_training_only_never_eval_outputs_params_or_flops():
    spec = ArchSpec("hybrid", (CellSpec(("a@0", "b@0"), "tensor", 8, "relu", (("proj_dim", 4),)),
                               CellSpec(("a@0", "b@0"), "concat", 8, "relu")), head=(6,))
    shapes = {"a@0": (5,), "b@0": (3,)}
    plain_head, dropped = FusionHead(spec, shapes, 3), FusionHead(spec, shapes, 3, dropout=0.5)
    dropped.load_state_dict(plain_head.state_dict())
    assert plain_head.state_dict().keys() == dropped.state_dict().keys()
    assert count_params(dropped) == count_params(plain_head)
    assert count_flops(dropped, dropped.example_taps(1)) == count_flops(plain_head, plain_head.example_taps(1))
    taps = {"a@0": torch.randn(16, 5), "b@0": torch.randn(16, 3)}
    plain_head.eval()
    dropped.eval()
    assert torch.equal(plain_head(taps), dropped(taps))
    plain_head.train()
    dropped.train()
    assert torch.equal(plain_head(taps), plain_head(taps)) and not torch.equal(plain_head(taps), dropped(taps))
    with pytest.raises(ValueError, match=r"^dropout: must be in \[0, 1\), got 1.0$"):
        FusionHead(spec, shapes, 3, dropout=1.0)
