"""Training one candidate: its fusion cells and head on cached taps, scored on val and test.

`fit` is the one training loop (Adam; shuffled mini-batches, or full-batch steps on a
small training set; linear warm-up then cosine decay over a step budget; early stopping
on val accuracy only after a minimum number of steps; best weights restored); backbone
pretraining, candidates on cached taps and candidates that run their backbones on every
batch all go through it, so their timings compare like for like. A run whose loss grows
far past its first loss or whose weights blow up comes back `status: "diverged"`, one
that cannot train at all (a non-finite loss with sane weights: bad inputs) `"failed"`,
each with the reason, instead of raising. The defaults were chosen by
`experiments/bench_recipe.py` (experiments/RESULTS.md, "Training recipe").
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion_ops import fusion_class
from fusion_ops.backbones import Backbone, seeded_init
from fusion_ops.base import LENGTHS_SUFFIX, auxiliary_loss, lengths_key, masked_mean
from fusion_ops.cost import count_flops, count_params
from fusion_ops.model import FusionHead, build_model, candidate_cost, check_spec, required_taps
from search.datasets import Dataset
from search.training.adam import Adam
from search.training.device import check_device, resolve_device, tap_tensors, to_device
from search.training.latency import candidate_latency
from search.training.taps import TapCache, TapRows
from search.training.tasks import Task, get_task
from spaces.spec import ArchSpec
from spaces.yaml_errors import ConfigError, at

Split = tuple[dict[str, Any], Tensor]  # ({input name: (N, ...) Tensor or TapRows}, labels (N,))
Report = Callable[[int, float], Any]  # (epoch, val_accuracy) at each evaluation; returning True stops training
EVAL_BATCH = 4096
SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adam", "adamw")
DIVERGED_LOSS = 100.0  # a training loss this many times the first one means the run diverged
DIVERGED_WEIGHT = 1.0e6  # as does a weight this large (in absolute value)


@dataclass(frozen=True)
class TrainConfig:
    """`train:` — how one candidate trains (Adam, step budget, early stopping on val accuracy).

    `weight_decay` is applied as `optimizer` says: `adam` adds `weight_decay * w` to the
    gradient before Adam's moments (coupled L2, as `torch.optim.Adam`); `adamw` shrinks the
    weights by `lr * weight_decay * w` each step, outside the moments (decoupled, as
    `torch.optim.AdamW`, Loshchilov & Hutter 2019); `search.training.adam` computes both.

    The step budget is `min(max_steps, epochs * steps per epoch)`; an epoch is one step
    when the training set has at most `full_batch` samples. Val accuracy is measured at
    the end of an epoch once `eval_every` steps have passed since the last measurement
    (so every epoch when epochs are long), and at the end of the budget. Training stops
    after `patience` measurements in a row without a new best, counting only those past
    `min_steps`.
    """

    epochs: int = 1000
    batch_size: int = 128
    lr: float = 1.0e-2
    weight_decay: float = 1.0e-2
    optimizer: str = "adam"  # adam: weight_decay is coupled L2; adamw: decoupled (see the docstring)
    patience: int = 5  # evaluations past min_steps without a new best val accuracy before stopping
    threads: int = 1  # torch intra-op threads while training (one per trial under Ray)
    seed: int = 0
    aux_weight: float | None = None  # weight of fusion ops' auxiliary losses; None: each op's default
    max_steps: int = 400  # optimiser steps at most (0: no cap; epochs still bound it)
    min_steps: int = 200  # optimiser steps before early stopping may fire
    eval_every: int = 20  # optimiser steps between val evaluations (at most one per epoch; 0: every epoch)
    full_batch: int = 2048  # train sets of at most this many samples take full-batch steps (0: never)
    schedule: str = "cosine"  # cosine: linear warm-up, then cosine decay to ~0 over the budget; constant: lr
    warmup: float = 0.05  # fraction of the step budget spent warming up linearly from lr/warmup_steps
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: off)
    dropout: float = 0.0  # on each fusion cell's output, training only (FusionHead)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (search.training.device); auto: cuda when torch sees one

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "train") -> TrainConfig:
        """Validated config; a mistake raises ConfigError naming its key, e.g. `train.lr: must be > 0, got -1`."""
        if d is None:
            return cls()
        check_section(d, where, [f.name for f in fields(cls)])
        for key, value in d.items():
            _check_field(key, value, at(where, key))
        return cls(**{k: (float(v) if k in _FLOATS and v is not None else v) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_section(d: Any, where: str, known: Sequence[str]) -> None:
    """A config section must be a mapping whose keys are all in `known` (listed in that order
    in the error); ConfigError naming the section or the key otherwise."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {d!r}")
    for key in d:
        if key not in known:
            raise ConfigError(f"{at(where, str(key))}: unknown key; known: {', '.join(known)}")


_FLOATS = ("lr", "weight_decay", "aux_weight", "warmup", "grad_clip", "dropout")
_BELOW_ONE = ("warmup", "dropout")  # fractions in [0, 1)
_LOWEST = {"epochs": 1, "batch_size": 1, "patience": 1, "threads": 1, "seed": 0,
           "max_steps": 0, "min_steps": 0, "eval_every": 0, "full_batch": 0}


def _check_field(key: str, value: Any, where: str) -> None:
    if key == "aux_weight" and value is None:
        return
    if key == "device":
        check_device(value, where)
        return
    if key in ("schedule", "optimizer"):
        known = SCHEDULES if key == "schedule" else OPTIMIZERS
        if value not in known:
            raise ConfigError(f"{where}: unknown {key} {value!r}; known: {', '.join(known)}")
        return
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if key == "lr" and value <= 0:
            raise ConfigError(f"{where}: must be > 0, got {value!r}")
        if value < 0:
            raise ConfigError(f"{where}: must be >= 0, got {value!r}")
        if key in _BELOW_ONE and value >= 1:
            raise ConfigError(f"{where}: must be < 1, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int) or value < _LOWEST[key]:
        raise ConfigError(f"{where}: expected an integer >= {_LOWEST[key]}, got {value!r}")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """`torch.set_num_threads(n)` inside, the previous count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def predict(model: nn.Module, inputs: Mapping[str, Tensor], batch: int = EVAL_BATCH) -> Tensor:
    """Logits `(N, C)` of `model` in eval mode over inputs `{name: (N, ...)}`, in batches."""
    was_training = model.training
    model.eval()
    n = len(next(iter(inputs.values())))
    out = torch.cat([model({k: v[i : i + batch] for k, v in inputs.items()}) for i in range(0, n, batch)])
    model.train(was_training)
    return out


def accuracy(model: nn.Module, split: Split) -> float:
    """Fraction of `split` classified right (non-finite logits count as wrong)."""
    logits = predict(model, split[0])
    right = (logits.argmax(1) == split[1].to(logits.device)) & torch.isfinite(logits).all(1)
    return float(right.float().mean())


@dataclass
class FitResult:
    """What `fit` did: `status` ok/failed/diverged (`reason` says why), epochs and optimiser
    steps run, the best epoch and its val accuracy."""

    status: str
    reason: str
    epochs: int
    best_epoch: int
    val_accuracy: float
    seconds: float
    steps: int = 0


def batch_size_for(n_train: int, cfg: TrainConfig) -> int:
    """Samples per step: all of them when `n_train <= cfg.full_batch`, else `cfg.batch_size`."""
    return max(n_train, 1) if n_train <= cfg.full_batch else cfg.batch_size


def step_budget(n_train: int, cfg: TrainConfig) -> int:
    """Optimiser steps `fit` runs at most: `min(max_steps, epochs * steps per epoch)`."""
    steps = cfg.epochs * math.ceil(max(n_train, 1) / batch_size_for(n_train, cfg))
    return min(steps, cfg.max_steps) if cfg.max_steps > 0 else steps


def lr_at(step: int, budget: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step `step` (1-based) of `budget`.

    cosine: `w = round(warmup * budget)` warm-up steps at `lr * step / w`, then
    `lr * (1 + cos(pi * (step - w - 1) / (budget - w))) / 2`: the first step after
    warm-up takes the full rate and the last one a small positive one. constant: `lr`.
    """
    if cfg.schedule == "constant":
        return cfg.lr
    warm = min(round(cfg.warmup * budget), budget - 1)
    if step <= warm:
        return cfg.lr * step / warm
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (step - warm - 1) / (budget - warm)))


def fit(model: nn.Module, train: Split, val: Split, cfg: TrainConfig, *, report: Report | None = None,
        task: Task | None = None) -> FitResult:
    """Train `model` (`{name: (B, ...)} -> (B, outputs)`) in place; best-val weights restored.

    `task` (default classification) gives the loss and the val score that early stopping and
    the best weights follow (`Task.score`: accuracy for classification, as always; AUC for
    binary and multi-label; minus the val MSE for regression); `FitResult.val_accuracy` holds
    the best score.

    Deterministic for `cfg.seed`: shuffling draws from its own generator, and anything
    drawing from torch's global RNG meanwhile (dropout) gets a forked one seeded from it.
    It trains where `model` and the data are (`cfg.device` is for the callers that put them there).
    """
    task = task or get_task("classification")
    shuffle = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer_for(params, cfg)
    xs, y = train
    n = len(y)
    batch, budget = batch_size_for(n, cfg), step_budget(n, cfg)
    run = _Run(cfg, budget)
    start = time.perf_counter()
    cuda = [y.device.index or 0] if y.device.type == "cuda" else []
    with torch_threads(cfg.threads), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)
        model.train()
        for epoch in range(1, cfg.epochs + 1):
            run.epoch = epoch
            order = torch.randperm(n, generator=shuffle).to(y.device)  # the same order on every device
            run.reason = _one_epoch(model, opt, params, xs, y, order, batch, run, task.loss)
            if run.reason:
                break
            if not run.due():
                continue
            run.reason = _weights_check(params)
            if run.reason:
                run.status = "diverged"
                break
            acc = accuracy(model, val) if task.name == "classification" else task.score(predict(model, val[0]), val[1])
            stop = run.evaluated(acc, model)
            if report is not None and report(epoch, acc) is True:
                stop = True
            if stop or run.step >= budget:
                break
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    seconds = time.perf_counter() - start
    status, reason = ("ok", "") if not run.reason else (run.status, f"{run.reason} in epoch {run.epoch} (lr {cfg.lr:g})")
    best = run.best if run.best_state is not None else math.nan
    return FitResult(status, reason, run.epoch, run.best_epoch, best, seconds, run.step)


class _Run:
    """The loop's state: steps taken, the first loss, when val is due, the best so far, patience."""

    def __init__(self, cfg: TrainConfig, budget: int) -> None:
        self.cfg, self.budget = cfg, budget
        self.step = self.epoch = self.best_epoch = self.last_eval = self.stale = 0
        self.first_loss: float | None = None
        self.best, self.best_state = -math.inf, None
        self.reason, self.status = "", "failed"

    def due(self) -> bool:
        """Val is measured at the end of this epoch (every epoch when eval_every steps span one)."""
        return self.step >= self.budget or self.step - self.last_eval >= self.cfg.eval_every

    def evaluated(self, acc: float, model: nn.Module) -> bool:
        """Record a val measurement; True when patience has run out."""
        self.last_eval = self.step
        if acc > self.best:
            self.best, self.best_epoch, self.stale = acc, self.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif self.step > self.cfg.min_steps:  # patience counts only measurements past min_steps
            self.stale += 1
        return self.step >= self.cfg.min_steps and self.stale >= self.cfg.patience

    def check_loss(self, loss: float, params: list[nn.Parameter]) -> str:
        """Why to stop after this loss ('' when fine); sets `status` to failed or diverged."""
        if not math.isfinite(loss):
            # sane weights and a non-finite loss: the inputs (or the model) cannot train at all
            blown = _weights_check(params)
            self.status = "diverged" if blown else "failed"
            return f"loss became {loss}" + (f" ({blown})" if blown else "")
        if self.first_loss is None:
            self.first_loss = loss
        elif loss > DIVERGED_LOSS * max(self.first_loss, 1e-3):
            self.status = "diverged"
            return f"loss grew to {loss:.3g}, over {DIVERGED_LOSS:g}x its first value {self.first_loss:.3g}"
        return ""


def _weights_check(params: list[nn.Parameter]) -> str:
    """Why the weights count as blown up ('' when fine): non-finite, or above DIVERGED_WEIGHT."""
    with torch.no_grad():
        top = max((float(p.abs().max()) for p in params if p.numel()), default=0.0)
    if not math.isfinite(top):
        return "weights became non-finite"
    return f"weights blew up (max |w| {top:.3g})" if top > DIVERGED_WEIGHT else ""


def optimizer_for(params: list[nn.Parameter], cfg: TrainConfig) -> Adam:
    """Adam (`cfg.optimizer` adam: coupled L2) or AdamW (adamw: decoupled weight decay), fused into one
    kernel where torch has it (CUDA; the CPU from torch 2.4): ~30 % faster steps for small heads on the CPU."""
    return Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=cfg.optimizer == "adamw")


def _one_epoch(model: nn.Module, opt: Adam, params: list[nn.Parameter], xs: Mapping[str, Tensor],
               y: Tensor, order: Tensor, batch_size: int, run: _Run,
               loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> str:
    """One pass over the shuffled data (cut short at the step budget); the reason to stop ('' when fine)."""
    cfg = run.cfg
    if batch_size < len(order):
        order = order[: (run.budget - run.step) * batch_size]  # rows past the step budget are never read
        xs, y = {k: v[order] for k, v in xs.items()}, y[order]  # one gather per epoch; batches are views
    for i in range(0, len(order), batch_size):
        if run.step >= run.budget:
            break
        loss = loss_fn(model({k: v[i : i + batch_size] for k, v in xs.items()}), y[i : i + batch_size])
        aux = auxiliary_loss(model, cfg.aux_weight)  # fusion ops' training-only terms
        if aux is not None:
            loss = loss + aux
        reason = run.check_loss(loss.item(), params)
        if reason:
            return reason
        opt.zero_grad()
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        run.step += 1
        opt.lr = lr_at(run.step, run.budget, cfg)
        opt.step()
    return ""


# ------------------------------------------------------------------ candidates on cached taps
def build_head(spec: ArchSpec, taps: TapCache, seed: int, dropout: float = 0.0) -> FusionHead:
    """`FusionHead(spec)` for the taps in `taps`, initialised from `seed`; ValueError if it cannot be built."""
    check_spec(spec, taps.n_taps())
    with seeded_init(torch.Generator().manual_seed(seed)):
        return FusionHead(spec, taps.tap_shapes, taps.num_classes, dropout, taps.flat_taps())


def candidate_config(cfg: TrainConfig, spec: ArchSpec, seed: int | None = None) -> TrainConfig:
    """How candidate `spec` trains: the run's `cfg` with the spec's searched training settings
    in, and `seed` (a confirmation run's) instead of `cfg.seed` when given."""
    settings = spec.train_settings
    if seed is not None:
        settings["seed"] = seed
    return replace(cfg, **settings) if settings else cfg


def train_fusion(
    spec: ArchSpec, taps: TapCache, train_cfg: TrainConfig, *, report: Report | None = None
) -> tuple[FusionHead, FitResult]:
    """The candidate's trained cells + head (best-val weights, on the CPU) and how training went.
    `train_cfg` is the config to train with as it is (see `candidate_config`), on its device."""
    device = resolve_device(train_cfg.device)
    head = build_head(spec, taps, train_cfg.seed, train_cfg.dropout).to(device)
    result = _fit_head(head, spec, taps, train_cfg, report, device)
    return head.cpu(), result


def task_of(taps: TapCache) -> Task:
    """The task the cached data is (its loss, score and metrics)."""
    return get_task(taps.task, taps.target_scale)


def _fit_head(head: FusionHead, spec: ArchSpec, taps: TapCache, cfg: TrainConfig, report: Report | None,
              device: torch.device | None = None) -> FitResult:
    """Train `head` (already on `device`, default the CPU) on the taps `spec` reads, there."""
    device = device or torch.device("cpu")
    sub = taps.subset(required_taps(spec))  # only the taps this spec reads (row by row on the CPU)
    pool = pooled_taps(spec) - head.flat
    train, val = (_pooled(tap_tensors(sub, s, device), pool) for s in ("train", "val"))
    return fit(head, train, val, cfg, report=report, task=task_of(taps))


def scored_splits(taps: TapCache, device: torch.device | None = None) -> dict[str, Split]:
    """The splits a trained candidate is scored on: val, test, and the holdout when there is one
    (on `device`, default the CPU)."""
    return {s: tap_tensors(taps, s, device or torch.device("cpu")) for s in ("val", "test", "holdout") if s in taps.taps}


def task_metrics(task: Task, model: nn.Module, splits: Mapping[str, Split]) -> dict[str, float]:
    """`{split}_{metric}` of every task metric on each split (`val_auc`, `test_r2`, ...), and
    `holdout_n`, the samples the holdout's metrics rest on (their noise: `search.baselines`)."""
    out = {f"{name}_{k}": v for name, data in splits.items()
           for k, v in task.metrics(predict(model, data[0]), data[1]).items()}
    if "holdout" in splits:
        out["holdout_n"] = len(splits["holdout"][1])
    return out


def pooled_taps(spec: ArchSpec) -> set[str]:
    """Taps that only vector operators read: but for those they read flattened (`FusionHead.flat`),
    they mean-pool tokens on every batch, so pooling them once per candidate gives the same
    numbers with less work per step."""
    token_readers = {t for c in spec.cells if fusion_class(c.op).TOKEN_INPUTS for t in c.taps}
    return {t for c in spec.cells for t in c.taps} - token_readers


def _pooled(split: Split, pool: set[str]) -> Split:
    xs, y = split
    out = {k: (_mean_tokens(v, _real(xs, k, v)) if k in pool and v.dim() == 3 else v) for k, v in xs.items()}
    return {k: v for k, v in out.items() if k.removesuffix(LENGTHS_SUFFIX) not in pool or k in pool}, y


def _real(xs: Mapping[str, Tensor], tap: str, x: Tensor) -> Tensor | None:
    """`(N, T)` bool of the real tokens of padded tap `tap` (None: not padded)."""
    n = xs.get(lengths_key(tap))
    return None if n is None else torch.arange(x.shape[1], device=n.device) < n.reshape(-1, 1)  # x may be TapRows


def _mean_tokens(x: Tensor | TapRows, real: Tensor | None) -> Tensor:
    """`masked_mean` of token tap `x` `(N, T, d) -> (N, d)`; cached rows are read in batches."""
    if isinstance(x, Tensor) or not len(x):
        return masked_mean(x[0:len(x)], real)
    return torch.cat([masked_mean(x[i : i + EVAL_BATCH], None if real is None else real[i : i + EVAL_BATCH])
                      for i in range(0, len(x), EVAL_BATCH)])


def evaluate_candidate(
    spec: ArchSpec,
    taps: TapCache,
    train_cfg: TrainConfig,
    *,
    backbones: Mapping[str, Backbone] | None = None,
    report: Report | None = None,
    seed: int | None = None,
    latency: bool = False,
) -> dict[str, Any]:
    """Train `spec` on cached taps and score it: accuracies, exact params/FLOPs, time per epoch.

    It trains with `candidate_config(train_cfg, spec, seed)`, on its `device` (`resolve_device`). Keys: arch_id, seed, status
    (ok | failed | diverged), reason, val_accuracy, test_accuracy, params_fusion, flops_fusion,
    params_total, flops_total (with the `backbones` the taps came from; else equal to the
    fusion part), epochs, steps, best_epoch, seconds, seconds_per_epoch; with `latency` (a run
    whose objectives hold it), also the measured latency (`search.training.latency`).
    A spec that cannot be built gives status failed, a diverging run diverged, not an exception.
    """
    train_cfg = candidate_config(train_cfg, spec, seed)
    start = time.perf_counter()
    device = resolve_device(train_cfg.device)
    try:
        head = build_head(spec, taps, train_cfg.seed, train_cfg.dropout)  # initialised on the CPU: same weights anywhere
    except ValueError as err:
        return _failed(spec, f"cannot build: {err}", start, train_cfg.seed, taps.task)
    head.to(device)
    result = _fit_head(head, spec, taps, train_cfg, report, device)
    task = task_of(taps)
    scores: dict[str, float] = {}
    if result.status == "ok":
        sub = taps.subset(required_taps(spec))
        splits = scored_splits(sub, device)  # read once: the task's metrics and the accuracy below share them
        scores = task_metrics(task, head, splits)
        if task.name == "classification":  # as always: fit's best val accuracy, test accuracy
            scores.update(val_accuracy=result.val_accuracy, test_accuracy=accuracy(head, splits["test"]))
    return _metrics(spec, head, result, scores, backbones, taps.num_classes, start, train_cfg, task, latency)


def _failed(spec: ArchSpec, reason: str, start: float, seed: int, task: str = "classification") -> dict[str, Any]:
    seconds = time.perf_counter() - start
    nan = {f"{s}_{m}": math.nan for s in ("val", "test") for m in get_task(task).metric_names}
    return {"arch_id": spec.arch_id, "seed": seed, "status": "failed", "reason": reason, **nan,
            "epochs": 0, "steps": 0, "best_epoch": 0, "seconds": seconds, "seconds_per_epoch": math.nan}


def _metrics(spec: ArchSpec, head: FusionHead, result: FitResult, scores: Mapping[str, float],
             backbones: Mapping[str, Backbone] | None, num_classes: int, start: float,
             cfg: TrainConfig, task: Task, latency: bool) -> dict[str, Any]:
    out = _failed(spec, result.reason, start, cfg.seed, task.name)
    ok = result.status == "ok"
    with torch.enable_grad():  # count_flops must run with grad on (see fusion_ops.cost)
        if backbones is not None:  # the whole model's costs, the fusion part's among them
            with torch.random.fork_rng(devices=[]):  # costing builds (and initialises) a throwaway model
                cost = candidate_cost(spec, backbones, num_classes)
        else:
            counted = _on_cpu(head)  # counts are the CPU's, wherever it trained (FLOP formulas differ by kernel)
            cost = {"params_fusion": count_params(counted), "flops_fusion": count_flops(counted, counted.example_taps(1))}
    out.update(scores if ok else {})
    out.update(
        status=result.status,
        task=task.name,
        params_fusion=cost["params_fusion"],
        flops_fusion=cost["flops_fusion"],
        params_total=cost.get("params_total", cost["params_fusion"]),
        flops_total=cost.get("flops_total", cost["flops_fusion"]),
        epochs=result.epochs,
        steps=result.steps,
        best_epoch=result.best_epoch,
        seconds_per_epoch=result.seconds / max(result.epochs, 1),
    )
    if ok and latency:  # measured, not counted: the `latency` objective (search.training.latency)
        out.update(candidate_latency(spec, head, backbones, num_classes, cfg.batch_size, cfg.threads))
    return out


def _on_cpu(module: nn.Module) -> nn.Module:
    """`module` itself when it is on the CPU, else a CPU copy."""
    where = next(iter(module.parameters()), None)
    return module if where is None or where.device.type == "cpu" else copy.deepcopy(module).cpu()


# ------------------------------------------------------------------ candidates that run their backbones
def dataset_tensors(dataset: Dataset, split: str, modalities: Iterable[str] | None = None) -> Split:
    """Raw inputs `{modality: (N, *shape)}` (all modalities, or those given) and labels of one split, as copies."""
    xs, y = dataset.split(split)
    names = dataset.modalities if modalities is None else modalities
    out = {m: torch.tensor(xs[m]) for m in names}
    lengths = dataset.lengths_of(split)  # padded sequences carry their valid lengths
    out.update({lengths_key(m): torch.tensor(lengths[m]) for m in names if m in lengths})
    return out, torch.tensor(y)


def evaluate_with_backbones(
    spec: ArchSpec,
    dataset: Dataset,
    backbones: Mapping[str, Backbone],
    train_cfg: TrainConfig,
    *,
    freeze: bool = True,
    report: Report | None = None,
    seed: int | None = None,
    latency: bool = False,
) -> dict[str, Any]:
    """Like `evaluate_candidate`, but the backbones run on every batch (`FusionModel.forward(inputs)`).

    `freeze=True` is what MFAS's code does (the baseline the tap cache is measured
    against; same fusion initialisation, so the same result); `freeze=False` trains
    copies of the backbones end to end (`backbones.freeze: false`).
    """
    train_cfg = candidate_config(train_cfg, spec, seed)
    start = time.perf_counter()
    device = resolve_device(train_cfg.device)
    try:
        model = build_model(spec, backbones, dataset.num_classes, freeze, torch.Generator().manual_seed(train_cfg.seed),
                            train_cfg.dropout)
    except ValueError as err:
        return _failed(spec, f"cannot build: {err}", start, train_cfg.seed, dataset.task)
    if device.type != "cpu":  # frozen backbones are the caller's: move a copy
        model = copy.deepcopy(model).to(device)
    train, val, test = (to_device(dataset_tensors(dataset, s), device) for s in ("train", "val", "test"))
    task = get_task(dataset.task, dataset.target_scale)
    result = fit(model, train, val, train_cfg, report=report, task=task)
    scores: dict[str, float] = {}
    if result.status == "ok":
        scores = task_metrics(task, model, {"val": val, "test": test})
        if task.name == "classification":
            scores.update(val_accuracy=result.val_accuracy, test_accuracy=accuracy(model, test))
    return _metrics(spec, model.fusion, result, scores, backbones, dataset.num_classes, start, train_cfg, task,
                    latency)
