"""One-shot search: rank sub-networks of a weight-sharing supernet, then train the predicted front.

At the first `ask()` the strategy trains a supernet (`fusion_ops.supernet`,
`search.strategies.supernet`) over the space on the run's tap cache, in this process (the driver): the
run has nothing else to do until it has asks, the supernet needs the whole space's modules
in one place, and training it as a Ray trial would ship the weights back for no gain.
Its weights go to `RUN/supernet.safetensors`, so a resume loads them instead of training
again (nothing is unpickled). Then every sub-network of a small space (or, for a large one,
those an NSGA-II evolution visits) is scored with inherited weights on val and costed
exactly (`cost_fn`), and the asks are the predicted fronts, best first: front by front
(non-dominated sorting), and within a front greedily by the hypervolume each adds to what
is already queued. Each ask is an ordinary stand-alone trial; `tell` records the real
result. With a budget, after its first `front_share` part the asks move next to the real
(stand-alone) front instead: its one-choice neighbours, estimated by the supernet relative to
their parents' real results (`search.strategies.supernet.local`). The predictions go to
`RUN/oneshot.json` (the report shows them against the trials).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from search import objectives as _objectives
from search.objectives import Objective
from search.pareto import non_dominated_sort
from search.strategies._base import CostFn, Strategy, StrategyContext
from search.strategies._sampling import hypervolume_gains
from spaces.space import SearchSpace
from spaces.spec import ArchSpec

FILE, WEIGHTS = "oneshot.json", "supernet.safetensors"
REWALK = 10  # evolution: further mutations of a child the search has already scored
RUN_SHARE = 1.0  # the supernet's steps at most this many times those of the run's candidates (steps_per_choice)
GREEDY_MAX = 200  # a predicted front larger than this is queued by predicted metric, not greedy hypervolume


class OneShotStrategy(Strategy):
    """Supernet-ranked search (see the module docstring). Options: `steps_per_choice` (fairness
    rounds; default 3/4 of one candidate's step budget, at most the run's budget of candidate
    steps over the space's choices: `steps_per_choice()`), `batch_size` (default: the run's rule),
    `exhaustive` (score every architecture of a space up to this size), `population` and
    `generations` (the evolution on larger spaces), `queue` (predicted candidates kept),
    `lr` (the supernet's learning rate; default the recipe's), `front_share` (the part of the
    budget asked from the predicted fronts before the real front's neighbours; 1: never),
    `tries` (mutations drawn per real-front spec for its neighbours)."""

    name = "oneshot"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        budget: int | None = None,
        cost_fn: CostFn | None = None,
        objectives: Sequence[Objective] | None = None,
        context: StrategyContext | None = None,
        steps_per_choice: int | None = None,
        batch_size: int | None = None,
        exhaustive: int = 5000,
        population: int = 64,
        generations: int = 30,
        queue: int = 300,
        lr: float | None = None,
        front_share: float = 0.5,
        tries: int = 20,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget, cost_fn=cost_fn, objectives=objectives)
        if context is None:
            raise ValueError("oneshot: needs the run's tap cache and train: settings to train its supernet "
                             "(context=StrategyContext(taps, train)); `fusion-nas search` passes them")
        for name, value in (("steps_per_choice", steps_per_choice or 1), ("batch_size", batch_size or 1),
                            ("exhaustive", exhaustive), ("population", population), ("generations", generations + 1),
                            ("queue", queue), ("tries", tries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"oneshot: {name} must be a positive integer, got {value!r}")
        for name, value, top in (("front_share", front_share, 1.0), ("lr", 1.0 if lr is None else lr, None)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= (top or np.inf):
                raise ValueError(f"oneshot: {name} must be a number > 0{f' and <= {top}' if top else ''}, got {value!r}")
        self.context = context
        self.options = {"steps_per_choice": steps_per_choice, "batch_size": batch_size, "exhaustive": exhaustive,
                        "population": population, "generations": generations, "queue": queue, "lr": lr,
                        "front_share": front_share, "tries": tries}
        self._scored: dict[str, float] = {}  # arch_id -> inherited-weight metric, of every spec scored
        self._scorer: Any = None
        self._cost_memo: dict[str, dict[str, float]] = {}
        self._rng = random.Random(seed)
        self._queue: deque[ArchSpec] | None = None
        self.predictions: list[dict[str, Any]] = []
        self.local: list[dict[str, Any]] = []  # the asks next to the real front, as asked
        self.info: dict[str, Any] = {}

    # ---- the contract ---------------------------------------------------------------------
    @property
    def fixed_asks(self) -> int:
        """The asks left before the neighbour phase (which follows the real front), once the
        supernet has ranked the space (at the first ask); without a budget, every ask."""
        if self._queue is None:
            return 0
        if self.budget is None:
            return sys.maxsize
        return max(0, math.ceil(self.options["front_share"] * self.budget) - len(self._asked))

    def _propose(self) -> ArchSpec:
        if self._queue is None:
            self._queue = deque(self._rank())
        if self.budget is not None and len(self._asked) >= math.ceil(self.options["front_share"] * self.budget):
            spec = self._local()
            if spec is not None:
                return spec
        while self._queue:
            spec = self.space.with_sampled_train(self._queue.popleft(), self._rng)
            if self.exhausted or self.is_new(spec):
                return spec
        return self._fresh_random(self._rng, self.space.sample)  # the predicted candidates are all asked

    def _local(self) -> ArchSpec | None:
        """The next neighbour of the real front (`search.strategies.supernet.local`), or None."""
        from search.strategies.supernet.local import next_local

        metric = self.objectives[0].name
        told = {s.arch_id: (s, r.values[metric]) for s, r in self.history if r is not None}  # s: valid, settings too
        told = dict(sorted(told.items()))  # what was told decides the asks, not in which order (resume)
        skip = {s.arch_id for s in self._asked.values()}
        for _ in range(3):  # a fresh draw of neighbours if every one drawn was asked already
            spec = next_local(self.space, list(told.values()), self._predict, lambda s, v: self._matrix(s, v)[0],
                              self._rng, tries=self.options["tries"], skip=skip)
            if spec is None:
                continue
            arch, spec = spec, self.space.with_sampled_train(spec, self._rng)
            if self.is_new(spec):
                self.local.append({"arch_id": arch.arch_id, "spec": arch.to_dict(), "arch": arch.describe(),
                                   "predicted": self._predict(arch), "ask": len(self._asked)})
                self._write()
                return spec
        return None

    def _predict(self, spec: ArchSpec) -> float:
        """`spec`'s inherited-weight metric (scored now if the ranking did not)."""
        if spec.arch_id not in self._scored:
            if self._scorer is None:
                from search.strategies.supernet.train import Scorer

                self._scorer = Scorer(self.supernet()[0], self.context.taps, metric=self.objectives[0].name,
                                      threads=self.context.train.threads)
            self._scored[spec.arch_id] = self._scorer(spec)
        return self._scored[spec.arch_id]

    # ---- the supernet -----------------------------------------------------------------------
    def train_config(self) -> Any:
        """The run's `train:` with the supernet's batch size (if set)."""
        cfg = self.context.train
        if self.options["lr"]:
            cfg = replace(cfg, lr=float(self.options["lr"]))
        return replace(cfg, batch_size=self.options["batch_size"], full_batch=0) if self.options["batch_size"] else cfg

    def steps_per_choice(self) -> int:
        """The option, or 3/4 of one candidate's step budget, cut so that the supernet (one path a
        step, `n_choices` steps a round) takes at most `RUN_SHARE` x the steps of the run's budget of
        candidates: in a space of thousands of cells it would otherwise train far longer than the
        whole search (issue 23: 12.5 minutes and no candidate, where mfas ended in 82 s)."""
        from search.strategies.supernet.paths import n_choices
        from search.training.train import step_budget

        if self.options["steps_per_choice"]:
            return int(self.options["steps_per_choice"])
        per_candidate = step_budget(len(self.context.taps.labels["train"]), self.context.train)
        wanted = max(1, round(0.75 * per_candidate))
        if self.budget is None:
            return wanted
        return max(1, min(wanted, int(RUN_SHARE * self.budget * per_candidate) // n_choices(self.space)))

    def fingerprint(self) -> str:
        """What decides the supernet's weights: the space, the seed, the recipe, the data's shapes and sizes."""
        taps = self.context.taps
        key = {"space": self.space.to_dict(), "seed": self.seed, "train": self.train_config().to_dict(),
               "steps_per_choice": self.steps_per_choice(), "shapes": {t: list(s) for t, s in taps.tap_shapes.items()},
               "n": {s: len(y) for s, y in taps.labels.items()}, "classes": taps.num_classes}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def supernet(self) -> tuple[Any, dict[str, Any]]:
        """The trained supernet and how it was trained: from the context's in-process cache, from
        the run directory (same fingerprint), or trained now."""
        from search.strategies.supernet.train import build_supernet, train_supernet

        ctx, key = self.context, self.fingerprint()
        if ctx.cache is not None and key in ctx.cache:
            net, info = ctx.cache[key]
            return net, {**info, "cached": True}
        net = build_supernet(self.space, ctx.taps, self.seed)
        saved = self._saved(key)
        if saved is not None:
            from safetensors.torch import load_file

            net.load_state_dict(load_file(str(Path(ctx.run_dir or ".") / WEIGHTS)))
            info = {**saved, "loaded": True}
        else:
            sized = "" if self.options["steps_per_choice"] or self.budget is None else (
                f", no more steps than {self.budget} candidates take; search.options.steps_per_choice trains it longer")
            self._say(f"oneshot: training the supernet ({len(net.cell_keys)} cells, {len(net.head_keys)} heads, "
                      f"{self.steps_per_choice()} steps per choice{sized})")
            stats = train_supernet(net, self.space, ctx.taps, self.train_config(), seed=self.seed,
                                   steps_per_choice=self.steps_per_choice(), say=self._say)
            info = {"fingerprint": key, "steps": stats.steps, "seconds": stats.seconds, "first_loss": stats.first_loss,
                    "last_loss": stats.last_loss, "steps_per_choice": self.steps_per_choice(),
                    "cells": len(net.cell_keys), "heads": len(net.head_keys),
                    "params": sum(p.numel() for p in net.parameters())}
            self._say(f"oneshot: supernet trained in {stats.seconds:.1f} s ({stats.steps} steps, "
                      f"loss {stats.first_loss:.3f} -> {stats.last_loss:.3f})")
            if ctx.run_dir is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(Path(ctx.run_dir) / WEIGHTS))
        if ctx.cache is not None:
            ctx.cache[key] = (net, info)
        return net, info

    def _saved(self, key: str) -> dict[str, Any] | None:
        run_dir = self.context.run_dir
        if run_dir is None or not (Path(run_dir) / WEIGHTS).is_file() or not (Path(run_dir) / FILE).is_file():
            return None
        try:
            info = json.loads((Path(run_dir) / FILE).read_text())["supernet"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return info if isinstance(info, dict) and info.get("fingerprint") == key else None

    def _say(self, line: str) -> None:
        if self.context.say is not None:
            self.context.say(line)

    # ---- ranking ---------------------------------------------------------------------------------
    def _rank(self) -> list[ArchSpec]:
        from search.strategies.supernet.train import Scorer

        net, info = self.supernet()
        start = time.perf_counter()
        scorer = self._scorer = Scorer(net, self.context.taps, metric=self.objectives[0].name,
                                       threads=self.context.train.threads)
        archs = self.space.size() // max(1, self.space.train_size())
        if archs <= self.options["exhaustive"]:
            specs = list({s.arch_id: s.architecture for s in self.space.enumerate(archs * self.space.train_size())}
                         .values())
            scored = {s.arch_id: (s, scorer(s)) for s in specs}
            mode = "exhaustive"
        else:
            scored = self._evolve(scorer)
            mode = "evolution"
        specs = [s for s, _ in scored.values()]
        values = [v for _, v in scored.values()]
        self._scored.update({s.arch_id: v for s, v in scored.values()})
        order, ranks, rows = self._order(specs, values)
        seconds = time.perf_counter() - start
        self.info = {"supernet": info, "ranking": {"mode": mode, "scored": len(specs), "seconds": seconds}}
        self._say(f"oneshot: scored {len(specs)} sub-networks ({mode}) in {seconds:.1f} s; "
                  f"{int((ranks == 0).sum())} on the predicted front")
        queue = [specs[i] for i in order[: self.options["queue"]]]
        self.predictions = [{"arch_id": specs[i].arch_id, "spec": specs[i].to_dict(), "arch": specs[i].describe(),
                             "predicted": values[i], **rows[i], "front_rank": int(ranks[i]), "order": n}
                            for n, i in enumerate(order[: self.options["queue"]])]
        self._write()
        return queue

    def _objs(self) -> list[Objective]:
        """The objectives a prediction has: the metric, and the costs known before training."""
        return [self.objectives[0], *(o for o in self.objectives[1:] if o.known_before and self.cost_fn is not None)]

    def _costs(self, spec: ArchSpec) -> dict[str, float]:
        if self.cost_fn is None:
            return {}
        if spec.arch_id not in self._cost_memo:
            self._cost_memo[spec.arch_id] = _objectives.costs_of(self.cost_fn(spec))
        return self._cost_memo[spec.arch_id]

    def _matrix(self, specs: Sequence[ArchSpec], values: Sequence[float]) -> tuple[np.ndarray, list[dict[str, float]]]:
        objs = self._objs()
        rows = [{**{o.name: c[o.name] for o in objs[1:]}} for c in map(self._costs, specs)]
        cols = {objs[0].name: list(values), **{o.name: [r[o.name] for r in rows] for o in objs[1:]}}
        return _objectives.minimised(cols, objs).reshape(len(specs), len(objs)), rows

    def _order(self, specs: list[ArchSpec], values: list[float]) -> tuple[list[int], np.ndarray, list[dict]]:
        """Queue order: predicted front by front, each greedily by the hypervolume it adds."""
        points, rows = self._matrix(specs, values)
        points = np.where(np.isfinite(points), points, np.inf)
        ranks = non_dominated_sort(np.nan_to_num(points, posinf=1e300))
        finite = points[np.isfinite(points).all(1)]
        ref = (finite.max(0) if len(finite) else np.zeros(points.shape[1])) + 1.0
        order: list[int] = []
        for r in np.unique(ranks):
            layer = sorted(np.flatnonzero(ranks == r), key=lambda i: (points[i, 0], specs[i].arch_id))
            if len(layer) > GREEDY_MAX:
                order += layer
            else:
                order += _greedy(points, layer, ref)
            if len(order) >= self.options["queue"]:
                break
        return order, ranks, rows

    def _evolve(self, scorer: Any) -> dict[str, tuple[ArchSpec, float]]:
        """NSGA-II over architectures (mutation by `SearchSpace.mutate`), every visited one kept. A
        child already scored mutates again (up to `REWALK` times), so a converging population
        still visits new sub-networks instead of re-drawing its own members."""
        rng = random.Random(self.seed)
        seen: dict[str, tuple[ArchSpec, float]] = {}

        def visit(spec: ArchSpec) -> str:
            spec = spec.architecture
            if spec.arch_id not in seen:
                seen[spec.arch_id] = (spec, scorer(spec))
            return spec.arch_id

        size = self.options["population"]
        pop = list(dict.fromkeys(visit(self.space.sample(rng)) for _ in range(size)))
        for _ in range(self.options["generations"]):
            rank, crowd = _rank_crowding(self._matrix([seen[a][0] for a in pop], [seen[a][1] for a in pop])[0])
            better = {a: (rank[i], -crowd[i]) for i, a in enumerate(pop)}
            children = []
            for _ in range(size):
                a, b = rng.choice(pop), rng.choice(pop)
                child = self.space.mutate(seen[min(a, b, key=lambda x: better[x])][0], rng).architecture
                for _ in range(REWALK):  # a repeat walks on, so the population keeps finding new sub-networks
                    if child.arch_id not in seen:
                        break
                    child = self.space.mutate(child, rng).architecture
                children.append(visit(child))
            merged = list(dict.fromkeys(pop + children))
            rank, crowd = _rank_crowding(self._matrix([seen[a][0] for a in merged], [seen[a][1] for a in merged])[0])
            keep = sorted(range(len(merged)), key=lambda i: (rank[i], -crowd[i], merged[i]))[:size]
            pop = [merged[i] for i in keep]
        return seen

    def _write(self) -> None:
        run_dir = self.context.run_dir
        if run_dir is None:
            return
        from search.runstore.store import atomic_write, to_jsonable

        data = {"strategy": self.name, "seed": self.seed, **self.info,
                "objectives": [o.name for o in self._objs()], "predictions": self.predictions, "local": self.local}
        atomic_write(Path(run_dir) / FILE, json.dumps(to_jsonable(data)))


def _greedy(points: np.ndarray, layer: list[int], ref: np.ndarray) -> list[int]:
    """`layer` ordered so that each next point adds the most hypervolume to those before it
    (ties: the order given)."""
    chosen: list[int] = []
    left = list(layer)
    while left:
        gains = hypervolume_gains(points[chosen], points[left], ref)
        best = int(np.argmax(gains)) if gains.max() > 0 else 0
        chosen.append(left.pop(best))
    return chosen


def _rank_crowding(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NSGA-II's non-dominated rank and crowding distance (within each rank) of `points`."""
    points = np.nan_to_num(np.where(np.isfinite(points), points, np.inf), posinf=1e300)
    ranks = non_dominated_sort(points)
    crowd = np.zeros(len(points))
    for r in np.unique(ranks):
        idx = np.flatnonzero(ranks == r)
        for k in range(points.shape[1]):
            order = idx[np.argsort(points[idx, k], kind="stable")]
            span = points[order[-1], k] - points[order[0], k]
            crowd[order[0]] = crowd[order[-1]] = math.inf
            if span > 0 and len(order) > 2:
                crowd[order[1:-1]] += (points[order[2:], k] - points[order[:-2], k]) / span
    return ranks, crowd
