"""Generated tasks whose labels need a known kind of fusion: the test of whether a search works.

Each modality is `x_m ~ N(0, I_d)` and `a_m = u_mᵀ x_m` a fixed projection on a unit vector
`u_m` drawn from the seed; labels threshold the noisy projections `ã_m = a_m + ε_m`,
`ε ~ N(0, noise²)`, so `noise` flips each modality's sign with the same probability whatever
the task. Which fusion can solve a task:

- additive:  `y = [ã_1 + ã_2 > 0]`; late (additive) fusion suffices.
- xor:       `y = [ã_1 ã_2 > 0]`; each modality alone and any additive fusion stay at chance.
- bilinear:  `y = [x_1ᵀ R x_2 + ε > 0]`, `R` of rank `rank`, `‖R‖_F = 1`; needs a multiplicative
             interaction.
- shift:     `x_2 = roll(x_1, k) + ε`, the class is `k` (`n_shifts` classes); needs a comparison
             of the two modalities (circular correlation).
- redundant: `y = [a + ε > 0]`, and `x_1`, `x_2` each hold their own noisy copy of `a` along
             `u_m`; either modality suffices.
- parity3:   three modalities, `y = [ã_1 ã_2 ã_3 > 0]`.
- regression: a regression target `y = ã_1 ã_2 + (ã_1 + ã_2) / 2` (float): an additive part any
             fusion finds and a multiplicative part that needs an interaction; judged by R².
- imbalanced: a binary task, `y = [ã_1 ã_2 > t]` with `t` set so that `positive` (default 0.1)
             of the samples are positive: always answering "negative" scores 1 - positive in
             accuracy and 0.5 in AUC, so the task type is `binary` (AUC).
- ctr:       categorical fields and a dense item embedding, a 4% click rate (binary, AUC);
             defaults n_train 20000, n_test 5000 (`search.datasets.planted_fields`).
- sentiment: tokens with negation and intensifiers, aligned audio and visual frames, a
             target in [-3, 3] (regression); defaults n_train 2000, n_test 600 (idem).

Modalities of the vector tasks are named `m1`, `m2` (`m3`). `meta` keeps the planted `u` (or `R`).

Sequence variant (`seq_len: T`, for operators that read tokens, e.g. `memory`): every
modality becomes `(n, T, d+1)`. Frames are `N(0, I_d)` distractors except at one position
`p ~ U{0..T-1}` per sample, shared by the modalities, which holds the task's `x_m`; the
last feature marks it (1 at `p`, 0 elsewhere). The positions and distractors come from a
generator of their own, so the same seed gives the same `x_m`, labels and splits as the
vector task; `meta['positions'][split]` keeps each sample's `p`. With `min_len: L0` too,
each sample gets a random length in `max(L0, p+1)..T`; frames past it are padding (zeros),
so a model must ignore padding to read the task (the lengths travel with the data).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from search.datasets.common import (
    SPLITS,
    DataError,
    Dataset,
    build_dataset,
    check_keys,
    normalize_of,
    opt_float,
    opt_int,
    seed_of,
    split_for,
)
from search.datasets.planted_fields import FIELD_TASKS

Arrays = dict[str, np.ndarray]
_KEYS = ("task", "n_train", "n_test", "n_val", "val_fraction", "d", "noise", "rank", "n_shifts", "seq_len",
         "positive", "min_len")


def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    u = rng.standard_normal(d)
    return u / np.linalg.norm(u)


def _gauss(rng: np.random.Generator, n: int, d: int, m: int) -> Arrays:
    return {f"m{i + 1}": rng.standard_normal((n, d)) for i in range(m)}


def _noisy_projections(rng: np.random.Generator, n: int, d: int, noise: float, m: int) -> tuple[Arrays, np.ndarray, dict]:
    """Inputs `x_m` and the noisy projections `ã_m` as columns `(n, m)`."""
    us = {f"m{i + 1}": _unit(rng, d) for i in range(m)}
    xs = _gauss(rng, n, d, m)
    a = np.stack([xs[k] @ u for k, u in us.items()], axis=1)
    return xs, a + noise * rng.standard_normal((n, m)), {"u": us}


def _product_task(m: int) -> Callable[..., tuple[Arrays, np.ndarray, dict]]:
    """Task `y = [Π_m ã_m > 0]` over `m` modalities: the parity of the projections' signs."""

    def make(rng: np.random.Generator, n: int, d: int, noise: float, **_: Any) -> tuple[Arrays, np.ndarray, dict]:
        xs, a, params = _noisy_projections(rng, n, d, noise, m)
        return xs, a.prod(axis=1) > 0, params

    return make


def _additive(rng: np.random.Generator, n: int, d: int, noise: float, **_: Any) -> tuple[Arrays, np.ndarray, dict]:
    xs, a, params = _noisy_projections(rng, n, d, noise, 2)
    return xs, a.sum(axis=1) > 0, params


def _bilinear(rng: np.random.Generator, n: int, d: int, noise: float, rank: int, **_: Any) -> tuple[Arrays, np.ndarray, dict]:
    if rank > d:
        raise DataError(f"data.rank: bilinear rank {rank} exceeds d={d}")
    r = rng.standard_normal((d, rank)) @ rng.standard_normal((rank, d))
    r /= np.linalg.norm(r)  # ||R||_F = 1, so x_1ᵀ R x_2 has unit variance
    xs = _gauss(rng, n, d, 2)
    score = np.einsum("ni,ij,nj->n", xs["m1"], r, xs["m2"])
    return xs, score + noise * rng.standard_normal(n) > 0, {"R": r}


def _shift(rng: np.random.Generator, n: int, d: int, noise: float, n_shifts: int, **_: Any) -> tuple[Arrays, np.ndarray, dict]:
    if n_shifts > d:
        raise DataError(f"data.n_shifts: {n_shifts} shifts exceed d={d} (rolls by k and k+d coincide)")
    x1 = rng.standard_normal((n, d))
    k = rng.integers(0, n_shifts, size=n)
    rows = (np.arange(d)[None, :] - k[:, None]) % d  # roll(x, k)[i] = x[i - k]
    x2 = np.take_along_axis(x1, rows, axis=1) + noise * rng.standard_normal((n, d))
    return {"m1": x1, "m2": x2}, k, {}


def _redundant(rng: np.random.Generator, n: int, d: int, noise: float, **_: Any) -> tuple[Arrays, np.ndarray, dict]:
    us = {"m1": _unit(rng, d), "m2": _unit(rng, d)}
    a = rng.standard_normal(n)
    xs = {}
    for name, u in us.items():
        z = rng.standard_normal((n, d))
        copy = a + noise * rng.standard_normal(n)
        xs[name] = z - np.outer(z @ u, u) + np.outer(copy, u)  # u_mᵀ x_m = noisy copy of a
    return xs, a + noise * rng.standard_normal(n) > 0, {"u": us}


def _regression(rng: np.random.Generator, n: int, d: int, noise: float, **_: Any) -> tuple[Arrays, np.ndarray, dict]:
    xs, a, params = _noisy_projections(rng, n, d, noise, 2)
    return xs, a[:, 0] * a[:, 1] + a.sum(axis=1) / 2, params


def _imbalanced(rng: np.random.Generator, n: int, d: int, noise: float, positive: float = 0.1,
                **_: Any) -> tuple[Arrays, np.ndarray, dict]:
    xs, a, params = _noisy_projections(rng, n, d, noise, 2)
    score = a.prod(axis=1)
    threshold = float(np.quantile(score, 1.0 - positive))
    return xs, score > threshold, {**params, "threshold": threshold}


TASKS: dict[str, Callable[..., tuple[Arrays, np.ndarray, dict]]] = {
    "additive": _additive,
    "xor": _product_task(2),
    "bilinear": _bilinear,
    "shift": _shift,
    "redundant": _redundant,
    "parity3": _product_task(3),
    "regression": _regression,
    "imbalanced": _imbalanced,
}
TASK_TYPES = {"regression": "regression", "imbalanced": "binary"}  # the others: classification


def _sequences(xs: Arrays, seq_len: int, rng: np.random.Generator) -> tuple[Arrays, np.ndarray]:
    """Hide each sample's `x_m` in a sequence of `seq_len` frames at one shared position `p`.

    Returns `{m: (n, T, d+1)}` (last feature: the marker) and the positions `(n,)`.
    """
    n = len(next(iter(xs.values())))
    pos = rng.integers(0, seq_len, size=n)
    rows = np.arange(n)
    out = {}
    for name in sorted(xs):
        x = xs[name]
        seq = np.zeros((n, seq_len, x.shape[1] + 1))
        seq[..., :-1] = rng.standard_normal((n, seq_len, x.shape[1]))  # distractor frames
        seq[rows, pos, :-1] = x  # (n, d) into frame p of each sample
        seq[rows, pos, -1] = 1.0
        out[name] = seq
    return out, pos


def _sizes(cfg: Mapping[str, Any], n_train: int, n_test: int) -> tuple[int, int, int]:
    """`(n_train, n_test, n_val)`; val is held out of the `n_train` pool."""
    n_train, n_test = opt_int(cfg, "n_train", n_train, 2), opt_int(cfg, "n_test", n_test, 1)
    n_val = opt_int(cfg, "n_val", None, 1)
    if n_val is None:
        n_val = max(1, round(opt_float(cfg, "val_fraction", 0.2, 0.0, 1.0) * n_train))
    if n_val >= n_train:
        raise DataError(f"data.n_val: {n_val} validation samples leave none of n_train={n_train} to train on")
    return n_train, n_test, n_val


def _load_fields(cfg: Mapping[str, Any], task: str) -> Dataset:
    """A task of `planted_fields`: its own defaults and keys; a generator's lengths travel with the data."""
    spec = FIELD_TASKS[task]
    reads = ("n_train", "n_test", "n_val", "val_fraction", *spec.keys)
    for key in cfg:
        if key in _KEYS and key != "task" and key not in reads:
            raise DataError(f"data.{key}: not read by planted task {task!r}; it reads {', '.join(reads)}")
    n_train, n_test, n_val = _sizes(cfg, spec.n_train, spec.n_test)
    rng = np.random.default_rng(seed_of(cfg))
    xs, y, lengths, meta = spec.make(rng, n_train + n_test, cfg)
    splits = split_for(spec.kind, y, [n_train - n_val, n_val, n_test], rng)
    meta = {"task": task, **spec.finish(meta, y, splits)}
    padded = None if lengths is None else {m: lengths for m in xs}  # tokens and frames share each sample's length
    return build_dataset(f"planted-{task}", f"planted:{task}", xs, y, splits, normalize_of(cfg), meta=meta,
                         task=spec.kind, lengths=padded)


def load_planted(cfg: Mapping[str, Any], base_dir: Path | None = None) -> Dataset:
    """Generate planted task `cfg['task']`; val is held out of the `n_train` pool, stratified.

    With `seq_len`, each modality is a sequence hiding the vector sample (see the module doc).
    """
    check_keys(cfg, _KEYS, "planted")
    task = cfg.get("task")
    if not isinstance(task, str) or (task not in TASKS and task not in FIELD_TASKS):
        known = ", ".join(sorted([*TASKS, *FIELD_TASKS]))
        raise DataError(f"data.task: unknown planted task {task!r}; known: {known}")
    if task in FIELD_TASKS:
        return _load_fields(cfg, task)
    n_train, n_test, n_val = _sizes(cfg, 4000, 1000)
    d = opt_int(cfg, "d", 16, 1)
    noise = opt_float(cfg, "noise", 0.1, 0.0, 1e6)
    seq_len = opt_int(cfg, "seq_len", None, 2)
    min_len = opt_int(cfg, "min_len", None, 1)
    if min_len is not None and (seq_len is None or min_len > seq_len):
        raise DataError(f"data.min_len: needs seq_len >= min_len (random lengths of sequences), got {min_len}")
    rng = np.random.default_rng(seed_of(cfg))
    xs, y, params = TASKS[task](
        rng, n_train + n_test, d, noise, rank=opt_int(cfg, "rank", 2, 1), n_shifts=opt_int(cfg, "n_shifts", 8, 2),
        positive=opt_float(cfg, "positive", 0.1, 0.01, 0.5),
    )
    kind = TASK_TYPES.get(task, "classification")
    y = np.asarray(y, dtype=np.float64 if kind == "regression" else np.int64)
    splits = split_for(kind, y, [n_train - n_val, n_val, n_test], rng)
    name, meta = f"planted-{task}", {"task": task, **params}
    if seq_len is not None:
        # a generator of its own: the vector task's draws (x_m, labels, splits) stay the same
        seq_rng = np.random.default_rng([seed_of(cfg), seq_len])
        xs, pos = _sequences(xs, seq_len, seq_rng)
        name, meta = f"{name}-seq{seq_len}", {**meta, "seq_len": seq_len,
                                             "positions": {s: pos[i] for s, i in zip(SPLITS, splits, strict=True)}}
        if min_len is not None:
            lengths = seq_rng.integers(np.maximum(min_len, pos + 1), seq_len + 1)
            for x in xs.values():
                x[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0.0
            name, padded = f"{name}-len{min_len}", {m: lengths for m in xs}
            return build_dataset(name, f"planted:{task}", xs, y, splits, normalize_of(cfg), meta=meta, task=kind,
                                 lengths=padded)
    return build_dataset(name, f"planted:{task}", xs, y, splits, normalize_of(cfg), meta=meta, task=kind)
