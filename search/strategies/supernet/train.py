"""Training a supernet on the tap cache, and scoring its sub-networks with inherited weights.

Training follows the run's `train:` recipe (Adam, lr, weight decay, full batch when the
train split is small, linear warm-up then cosine decay over the step budget, gradient
clipping) for `steps_per_choice` fairness rounds (`search.strategies.supernet.paths`). Each step's loss
is the mean of the losses of every head along its chain (deep supervision), plus the
fusion operators' auxiliary losses of the cells that ran. No fusion operator keeps
batch-norm statistics, so the inherited weights need no recalibration: a sub-network is
scored as it stands, on the val split (the holdout is never read).
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fusion_ops.backbones import seeded_init
from fusion_ops.base import auxiliary_loss
from fusion_ops.supernet import CellKey, HeadKey, Supernet, path_keys
from search.strategies.supernet.paths import covering_specs, fair_paths, n_choices
from search.training.adam import Adam
from search.training.taps import TapCache
from search.training.train import TrainConfig, batch_size_for, lr_at, optimizer_for, task_of, torch_threads
from spaces.space import SearchSpace
from spaces.spec import ArchSpec

Say = Callable[[str], None]


def build_supernet(space: SearchSpace, taps: TapCache, seed: int) -> Supernet:
    """The supernet of `space` over `taps`' shapes, initialised from `seed`."""
    with seeded_init(torch.Generator().manual_seed(seed)):
        return Supernet(covering_specs(space), taps.tap_shapes, taps.num_classes, taps.flat_taps())


@dataclass
class SupernetStats:
    """What training did: steps, seconds, the mean loss of the first and last 50 steps, and how
    many steps each cell module and each head took part in."""

    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    counts: dict[CellKey, int]
    head_counts: dict[HeadKey, int]


def step_budget(space: SearchSpace, steps_per_choice: int) -> int:
    """Optimiser steps: `steps_per_choice` fairness rounds."""
    return max(1, steps_per_choice * n_choices(space))


PROGRESS_S = 30.0  # the longest a supernet trains without a progress line


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def train_supernet(net: Supernet, space: SearchSpace, taps: TapCache, cfg: TrainConfig, *, seed: int,
                   steps_per_choice: int, say: Say | None = None) -> SupernetStats:
    """Train `net` in place on the train split (deterministic for `seed` and `cfg.threads`)."""
    task = task_of(taps)
    xs, y = taps.tensors("train")
    n = len(y)
    batch, budget = batch_size_for(n, cfg), step_budget(space, steps_per_choice)
    # one Adam per module: a step touches only the modules on its path (the same updates as one
    # Adam over all of them, which skips parameters without a gradient, at a fraction of the cost)
    opts: dict[int, Adam] = {}  # made when a module first trains
    paths = fair_paths(space, random.Random(seed))
    shuffle = torch.Generator().manual_seed(seed)
    counts: dict[CellKey, int] = dict.fromkeys(net.cell_keys, 0)
    head_counts: dict[HeadKey, int] = dict.fromkeys(net.head_keys, 0)
    losses: list[float] = []
    order, at = torch.randperm(n, generator=shuffle), 0
    start = time.perf_counter()
    next_line = start + PROGRESS_S  # a line at each quarter of the budget, and at least this often
    with torch_threads(cfg.threads):
        net.train()
        for step in range(1, budget + 1):
            path = next(paths)
            if batch < n:
                if at + batch > n:
                    order, at = torch.randperm(n, generator=shuffle), 0
                rows, at = order[at : at + batch], at + batch
                xb, yb = {k: v[rows] for k, v in xs.items()}, y[rows]
            else:
                xb, yb = xs, y
            loss = torch.stack([task.loss(out, yb) for out in net.prefix_outputs(path.chain, path.heads, xb)]).mean()
            cells = [net.cell(k) for k in path.cells]
            active = [*cells, *(net.head(k) for k in dict.fromkeys(k for ks in path.heads.values() for k in ks))]
            aux = auxiliary_loss(torch.nn.ModuleList(cells), cfg.aux_weight)
            if aux is not None:
                loss = loss + aux
            value = float(loss.detach())
            if not math.isfinite(value):
                continue  # one path that cannot train must not poison the shared weights
            for m in active:
                if id(m) not in opts and any(True for _ in m.parameters()):
                    opts[id(m)] = optimizer_for(list(m.parameters()), cfg)
            steppers = [opts[id(m)] for m in active if id(m) in opts]
            for opt in steppers:
                opt.zero_grad()
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for m in active for p in m.parameters() if p.grad is not None],
                                               cfg.grad_clip)
            for opt in steppers:
                opt.lr = lr_at(step, budget, cfg)
                opt.step()
            losses.append(value)
            for k in path.cells:
                counts[k] += 1
            for k in {k for keys in path.heads.values() for k in keys}:
                head_counts[k] += 1
            now = time.perf_counter()
            if say is not None and step < budget and (step % max(1, budget // 4) == 0 or now >= next_line):
                left = (budget - step) * (now - start) / step
                say(f"oneshot: supernet step {step:,}/{budget:,} ({step / budget:.0%}), loss "
                    f"{np.mean(losses[-50:]):.3f}, about {_minutes(left)} left")
                next_line = now + PROGRESS_S
    first = float(np.mean(losses[:50])) if losses else math.nan
    last = float(np.mean(losses[-50:])) if losses else math.nan
    return SupernetStats(budget, time.perf_counter() - start, first, last, counts, head_counts)


class Scorer:
    """`scorer(spec)`: the spec's inherited-weight value of `metric` (a task metric's name, raw:
    higher or lower is better as that metric says) on one split, val by default; without
    `metric`, `Task.score` (accuracy for classification). Position-0 outputs are reused."""

    def __init__(self, net: Supernet, taps: TapCache, metric: str | None = None, split: str = "val",
                 threads: int = 1) -> None:
        self.net, self.task, self.threads, self.metric = net, task_of(taps), threads, metric
        self.xs, self.y = taps.tensors(split)
        self._first: dict[CellKey, Tensor] = {}

    @torch.no_grad()
    def __call__(self, spec: ArchSpec) -> float:
        keys, head = path_keys(spec)
        with torch_threads(self.threads):
            if self.net.training:
                self.net.eval()
            if keys[0] not in self._first:
                self._first[keys[0]] = self.net.cell(keys[0])(self.xs, None)
            h = self._first[keys[0]]
            for k in keys[1:]:
                h = self.net.cell(k)(self.xs, h)
            logits = self.net.head(head)(h)
        if self.metric is None or (self.metric == "accuracy" and self.task.name == "classification"):
            return float(self.task.score(logits, self.y))
        return float(self.task.metrics(logits, self.y)[self.metric])
