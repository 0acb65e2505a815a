"""Training and counting without `torch._dynamo`: the same numbers, 1.6 CPU s less per process.

`torch.optim` and `FlopCounterMode` import `torch._dynamo` at their first use; every Ray trial
worker paid for it. `search.training.adam.Adam` and `fusion_ops.cost.count_flops` must give what
they gave: the weights of `torch.optim.Adam`/`AdamW` bit for bit, Adam's defining update, and
`FlopCounterMode`'s totals on every operator and backbone kind.
"""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fusion_ops import formats as F
from fusion_ops import list_fusions
from fusion_ops.base import FusionOp
from fusion_ops.cost import _EXTRA_FORMULAS, count_flops
from fusion_ops.load import ExportedModel
from search.training.adam import Adam
from tests.test_formats import CASES, _model, bb

ROOT = Path(__file__).resolve().parents[1]


def _train(make, steps: int = 12) -> list[torch.Tensor]:
    """Weights after `steps` steps of `make(params)` on a small net whose last layer never gets a
    gradient, with the learning rate changed before every step (as the schedule does)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3), torch.nn.Linear(2, 2))
    opt = make(list(net.parameters()))
    x = torch.randn(16, 5)
    for s in range(steps):
        opt.zero_grad()
        net[:3](x).square().mean().backward()
        lr = 0.01 * (1 + s % 3)
        if isinstance(opt, Adam):
            opt.lr = lr
        else:
            for group in opt.param_groups:
                group["lr"] = lr
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_steps_are_torch_optims_bit_for_bit(fused, decoupled, wd):
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref = _train(lambda ps: kind(ps, lr=0.01, weight_decay=wd, fused=fused, foreach=None if fused else False))
    ours = _train(lambda ps: Adam(ps, lr=0.01, weight_decay=wd, decoupled=decoupled, fused=fused))
    assert all(torch.equal(a, b) for a, b in zip(ref, ours, strict=True))
    untouched = _train(lambda ps: Adam(ps, lr=0.0, fused=fused), steps=0)[-2:]
    assert all(torch.equal(a, b) for a, b in zip(untouched, ours[-2:], strict=True))  # no gradient: no step


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_is_the_defining_update(decoupled):
    """Kingma & Ba (2015), Algorithm 1, in float64 one number at a time; weight decay λ coupled
    (added to the gradient) or decoupled (the weight shrunk by lr·λ first, Loshchilov & Hutter)."""
    b1, b2, eps, wd = 0.9, 0.999, 1e-8, 0.05
    w0 = [0.5, -1.5, 2.0]
    grads = [[0.1 * (k + 1) * (-1) ** (i + k) + 0.01 * i for i in range(3)] for k in range(6)]
    lrs = [0.1, 0.05, 0.2, 0.1, 0.01, 0.3]
    w, m, v = list(w0), [0.0] * 3, [0.0] * 3
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        for i in range(3):
            gi = g[i] if decoupled else g[i] + wd * w[i]
            if decoupled:
                w[i] *= 1 - lr * wd
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            w[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    for fused in (True, False):
        p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
        opt = Adam([p], lr=lrs[0], weight_decay=wd, decoupled=decoupled, fused=fused)
        for g, lr in zip(grads, lrs, strict=True):
            p.grad, opt.lr = torch.tensor(g, dtype=torch.float64), lr
            opt.step()
        assert p.detach().tolist() == pytest.approx(w, rel=1e-9, abs=1e-12)


def _stock_flops(module: torch.nn.Module, x: dict) -> int:
    """The same count through torch's `FlopCounterMode`, as `count_flops` did before."""
    interaction = 0

    def add(op: FusionOp, args: tuple) -> None:
        nonlocal interaction
        interaction += op.interaction_flops(args[0])

    hooks = [m.register_forward_pre_hook(add) for m in module.modules() if isinstance(m, FusionOp)]
    try:
        with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return int(counter.get_total_flops()) + interaction


def _inputs(model: ExportedModel) -> dict[str, torch.Tensor]:
    x = F.example_inputs(model, batch=3, seed=1)
    return {k.replace("_lengths", ":lengths"): torch.as_tensor(v) for k, v in x.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_count_flops_is_flop_counter_modes_total_on_every_backbone_kind(case):
    model = _model(case, torch.Generator().manual_seed(0))
    x = _inputs(model)
    assert count_flops(model, x) == _stock_flops(model, x) > 0


@pytest.mark.parametrize("op", list_fusions())
def test_count_flops_is_flop_counter_modes_total_on_every_operator(op):
    from fusion_ops.model import build_model
    from spaces.spec import ArchSpec, CellSpec

    g = torch.Generator().manual_seed(0)
    backbones = {"a": bb("gru", (6, 3), g, hidden=[8]), "v": bb("mlp", (5,), g, widths=[8, 8])}
    spec = ArchSpec("hybrid", (CellSpec(("a@0", "v@1"), op, 8, "relu"), CellSpec(("a@1", "v@0"), "concat", 8, "relu")))
    model = build_model(spec, backbones, 3, generator=g).eval()
    x = {"a": torch.randn(3, 6, 3), "v": torch.randn(3, 5)}
    assert count_flops(model, x) == _stock_flops(model, x) > 0


def test_a_process_that_pretrains_trains_and_counts_never_imports_torch_dynamo(tmp_path):
    """What a trial worker does (and a CLI search before it): pretrain, cache the taps, train and
    cost candidates, fit mfas's surrogate. A fresh process, as a Ray worker is."""
    script = textwrap.dedent(f"""
        import sys, yaml
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_report import CONFIG
        from search.config import load_config
        from search.engine.run import prepare
        from search.strategies.surrogate import Surrogate
        from search.training.train import evaluate_candidate
        import numpy as np
        path = {str(tmp_path / "c.yaml")!r}
        open(path, "w").write(yaml.safe_dump({{**CONFIG, "backbones": {{**CONFIG["backbones"], "cache_dir": {str(tmp_path / "cache")!r}}}}}))
        cfg = load_config(path)
        prepared = prepare(cfg, say=lambda s: None)
        specs = list(cfg.space.enumerate())[:3]
        assert all(evaluate_candidate(s, prepared.taps, cfg.train, backbones=prepared.backbones)["status"] == "ok" for s in specs)
        Surrogate(4, seed=0, members=2, steps=5).fit(np.random.rand(8, 4), np.random.rand(8))
        print("torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
