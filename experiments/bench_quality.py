"""Benchmark: does the search's front beat what a user would build by hand, on data it never saw?

For each dataset, with the smallest config a user would write (`name` and `data`; every
other setting is the default: mfas, every operator, the default training recipe and
`search.confirm`), it compares on the same train/val/test split:

(a) the search: the run's answer (`answer_trial`: among its confirmed front, the best mean
    accuracy on the run's holdout, the part of val no training or strategy sees, when the val
    split is large enough for one, else the best mean val accuracy; the cheaper late concat
    when the holdout cannot tell them apart), scored by its mean test accuracy, and what it
    would be with `search.rank: lcb`; searches of 64 candidates with 3 search seeds, run
    in-process (`search.engine.inprocess`: the same strategy, confirmation and records as a Ray
    run, one candidate after another); "budget 32" is the same search stopped after 32
    candidates, its front confirmed there;
(b) the best baseline a run trains (`search.baselines`: each modality alone, logistic
    regression on the raw inputs, late concat), chosen as (a) is, scored on test;
(c) an oracle: the best (on val) of a small grid over operators x lr x weight decay x width,
    early (raw inputs) and late, each trained with a long recipe, scored on test.

Usage: .venv/bin/python experiments/bench_quality.py [--smoke-test] [--no-write] [--jobs 2] [--data-seed N]
The full run replaces the "bench_quality" block of experiments/RESULTS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from experiments.results_block import machine_line, write_block  # noqa: E402
from search.baselines import answer_trial, best_basic, seed_trials  # noqa: E402
from search.config import config_from_dict  # noqa: E402
from search.engine.inprocess import search_in_process  # noqa: E402
from search.engine.run import Prepared, cost_function, evaluate_trial, prepare, reference_point, trial_context  # noqa: E402
from search.runstore.store import candidate_records, front_from_trials  # noqa: E402
from search.strategies import make_strategy  # noqa: E402
from search.training.baselines_fit import seeds_of, train_baselines  # noqa: E402
from search.training.train import TrainConfig, evaluate_candidate  # noqa: E402
from spaces import ArchSpec  # noqa: E402
from spaces.spec import CellSpec, make_tap  # noqa: E402

PLANTED = {"kind": "planted", "d": 32, "n_train": 1000, "n_test": 1000, "seed": 0}
DATASETS: dict[str, dict[str, Any]] = {
    "planted xor": {**PLANTED, "task": "xor"},
    "planted bilinear": {**PLANTED, "task": "bilinear", "rank": 4},
    "planted shift": {**PLANTED, "task": "shift"},
    "av_digits": {"kind": "av_digits", "seed": 0},
    "mfeat": {"kind": "mfeat", "views": ["fou", "zer", "mor"], "seed": 0},
}
SMOKE = {"planted xor": {**PLANTED, "task": "xor", "n_train": 300, "n_test": 300, "d": 8}}
BUDGETS, SEEDS = (32, 64), (0, 1, 2)
ORACLE_OPS = ("concat", "tensor", "low_rank", "circulant", "attention", "ptp")
ORACLE_GRID = {"lr": (1e-3, 1e-2), "weight_decay": (1e-4, 1e-2), "width": (16, 64)}
# the long recipe: many steps, late early stopping (keys this TrainConfig does not know are skipped)
LONG = {"epochs": 2000, "max_steps": 1500, "min_steps": 750, "patience": 20}
SMOKE_LONG = {"max_steps": 150, "min_steps": 75}  # the smoke test's oracle: the same path, a tenth of the steps

_PREPARED: dict[str, Prepared] = {}
_BASELINES: dict[str, list[dict[str, Any]]] = {}


def config(name: str, data: dict[str, Any], smoke: bool = False) -> Any:
    """The smallest config a user would write: a name and the data."""
    raw: dict[str, Any] = {"name": name.replace(" ", "_"), "data": data}
    if smoke:  # a small space and a short pretraining, so the smoke test stays short
        raw["space"] = {"ops": {"concat": {}, "tensor": {}}, "widths": [8], "max_cells": 1}
        raw["backbones"] = {"pretrain": {"epochs": 3}}
    return config_from_dict(raw, ROOT / "experiments" / "configs" / "bench_quality.yaml")


def prepared(name: str, data: dict[str, Any], smoke: bool) -> Prepared:
    if name not in _PREPARED:
        _PREPARED[name] = prepare(config(name, data, smoke), say=lambda _m: None)
    return _PREPARED[name]


def best_point(name: str, seed: int, budget: int, records: list[dict[str, Any]], start: float,
                baselines: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's answer (`answer_trial`: the confirmed front's best mean holdout accuracy when the
    run has a holdout, else the best mean val accuracy; the late concat instead when the holdout
    cannot tell them apart and it is the cheaper), its seeds averaged, and what it would be with
    `search.rank: lcb`."""
    front, candidates = front_from_trials(records), {c["trial_id"]: c for c in candidate_records(records)}
    best, lcb = (candidates[answer_trial(front, baselines, records, rank=rank)] for rank in ("mean", "lcb"))
    m = best["metrics"]
    return {"dataset": name, "seed": seed, "budget": budget, "val": m["val_accuracy"], "test": m["test_accuracy"],
            "holdout": m.get("holdout_accuracy"), "n_seeds": m["n_seeds"], "arch": ArchSpec.from_dict(best["spec"]).describe(),
            "lcb_test": lcb["metrics"]["test_accuracy"], "lcb_arch": ArchSpec.from_dict(lcb["spec"]).describe(),
            "trials": len(records), "seconds": time.perf_counter() - start}


def one_search(name: str, data: dict[str, Any], seed: int, budgets: tuple[int, ...], smoke: bool) -> list[dict]:
    """A search of `max(budgets)` candidates; the smaller budgets are the same search stopped
    (and its front confirmed) after that many candidates, so one run gives every budget."""
    torch.set_num_threads(1)
    p = prepared(name, data, smoke)
    cfg = p.config
    cost = cost_function(p)
    strategy = make_strategy(cfg.search.strategy, cfg.space, seed=seed, budget=max(budgets), cost_fn=cost)
    ctx = trial_context(p)
    start, out = time.perf_counter(), []
    # as a run does: the baselines that are candidates of the space join the search first
    rows = run_baselines(name, data, smoke)
    records = search_in_process(
        lambda spec, seed=None: evaluate_trial(spec, ctx, seed=seed), strategy, max(budgets),
        confirm=cfg.search.confirm, base_seed=cfg.train.seed, reference=reference_point(cfg.space, cost, seed),
        checkpoints=budgets, on_checkpoint=lambda n, recs: out.append(best_point(name, seed, n, recs, start, rows)),
        seeded=seed_trials(rows, cfg.space))
    return [*out, best_point(name, seed, max(budgets), records, start, rows)]


def long_recipe(cfg: TrainConfig, **over: Any) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in {**LONG, **over}.items() if k in known})


def oracle_specs(p: Prepared, widths: tuple[int, ...], ops: tuple[str, ...]) -> list[ArchSpec]:
    """Early (raw inputs) and late (last taps) one-cell specs of each operator at its defaults."""
    depths = p.config.space.depth_map
    out = []
    for op, width, (stage, pick) in itertools.product(ops, widths, (("early", min), ("late", max))):
        taps = tuple(make_tap(m, pick(ds)) for m, ds in depths.items())
        out.append(ArchSpec(stage, (CellSpec(taps, op, width, "relu"),)))
    return out


def oracle(name: str, data: dict[str, Any], smoke: bool) -> dict[str, Any]:
    """The grid's best on val, and its test accuracy (mean over 3 training seeds of that point)."""
    torch.set_num_threads(1)
    p = prepared(name, data, smoke)
    grid = {k: v[:1] for k, v in ORACLE_GRID.items()} if smoke else ORACLE_GRID
    ops = ORACLE_OPS[:2] if smoke else ORACLE_OPS
    start, rows = time.perf_counter(), []
    for spec in oracle_specs(p, grid["width"], ops):
        for lr, wd in itertools.product(grid["lr"], grid["weight_decay"]):
            cfg = long_recipe(p.config.train, **(SMOKE_LONG if smoke else {}), lr=lr, weight_decay=wd)
            m = evaluate_candidate(spec, p.taps, cfg, backbones=p.backbones)
            if m["status"] == "ok":
                rows.append((m["val_accuracy"], spec, cfg))
    val, spec, cfg = max(rows, key=lambda r: r[0])
    tests = [evaluate_candidate(spec, p.taps, dataclasses.replace(cfg, seed=s))["test_accuracy"]
             for s in ((0,) if smoke else SEEDS)]
    return {"dataset": name, "val": val, "test": statistics.mean(tests), "n": len(rows),
            "arch": f"{spec.describe()} | lr={cfg.lr:g} wd={cfg.weight_decay:g}", "seconds": time.perf_counter() - start}


def run_baselines(name: str, data: dict[str, Any], smoke: bool) -> list[dict[str, Any]]:
    """The baselines a run of this config trains (its panel, one per confirmed seed), once per
    process: every search of a dataset seeds the same ones, and the baseline job reads them."""
    if name not in _BASELINES:
        p = prepared(name, data, smoke)
        _BASELINES[name] = train_baselines(p.dataset, p.backbones, p.taps, p.config.train,
                                           panel=p.config.search.baselines, n_seeds=seeds_of(p.config.search),
                                           say=lambda _m: None)
    return _BASELINES[name]


def baseline(name: str, data: dict[str, Any], smoke: bool) -> dict[str, Any]:
    b = best_basic(run_baselines(name, data, smoke))
    assert b is not None, "no basic baseline"
    return {"dataset": name, "name": b["name"], "val": b["val_accuracy"], "test": b["test_accuracy"],
            "holdout": b.get("holdout_accuracy")}


def table(searches: list[dict], baselines: list[dict], oracles: list[dict], budgets: tuple[int, ...]) -> list[str]:
    head = "| dataset | " + " | ".join(f"search, budget {b} (test, mean ± std of 3 seeds)" for b in budgets)
    top = budgets[-1]
    lines = [head + f" | best baseline (test) | oracle (test) | search {top} − baseline | search {top} − oracle "
                    f"| worst seed {top} − oracle | search {top} with `rank: lcb` (test) |",
             "|---|" + "---|" * (len(budgets) + 6)]
    for b in baselines:
        name = b["dataset"]
        o = next((o for o in oracles if o["dataset"] == name), None)  # None: not run (--only)
        cells, last, tests = [], 0.0, []
        for budget in budgets:
            tests = [s["test"] for s in searches if s["dataset"] == name and s["budget"] == budget]
            last = statistics.mean(tests)
            sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
            cells.append(f"{last:.3f} ± {sd:.3f}")
        oracle_cells = ("-", "-", "-") if o is None else (
            f"{o['test']:.3f}", f"{100 * (last - o['test']):+.1f} pts", f"{100 * (min(tests) - o['test']):+.1f} pts")
        lcb = [s["lcb_test"] for s in searches if s["dataset"] == name and s["budget"] == top and "lcb_test" in s]
        lcb_cell = f"{statistics.mean(lcb):.3f}" if lcb else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {b['test']:.3f} ({b['name']}) | {oracle_cells[0]} | "
                     f"{100 * (last - b['test']):+.1f} pts | {oracle_cells[1]} | {oracle_cells[2]} | {lcb_cell} |")
    return lines


def details(searches: list[dict], oracles: list[dict]) -> list[str]:
    out = ["", "Each search's answer among its confirmed front (val, holdout and test: mean over its seeds):", ""]
    for s in sorted(searches, key=lambda s: (s["dataset"], s["budget"], s["seed"])):
        held = f", holdout {s['holdout']:.3f}" if s.get("holdout") is not None else ""
        out.append(f"- {s['dataset']}, budget {s['budget']}, seed {s['seed']}: val {s['val']:.3f}{held}, "
                   f"test {s['test']:.3f} ({s['n_seeds']} seeds, {s['trials']} trials, {s['seconds']:.0f} s): "
                   f"`{s['arch']}`" + (f"; with `rank: lcb`: test {s['lcb_test']:.3f}, `{s['lcb_arch']}`"
                                       if s.get("lcb_arch", s["arch"]) != s["arch"] else ""))
    out += ["", "Oracles (best of the grid on val; test: mean of 3 training seeds):", ""]
    out += [f"- {o['dataset']}: val {o['val']:.3f}, test {o['test']:.3f} of {o['n']} ({o['seconds']:.0f} s): "
            f"`{o['arch']}`" for o in oracles]
    return out


def _job_file(cache: Path, fn: Any, args: tuple) -> Path:
    key = hashlib.sha256(json.dumps([fn.__name__, args], sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache / f"{fn.__name__}-{key}.json"


def cached(cache: Path | None, fn: Any, args: tuple) -> Any:
    """A finished job's stored result (None: not run yet, or no cache)."""
    if cache is None or not (path := _job_file(cache, fn, args)).is_file():
        return None
    return json.loads(path.read_text())


def store_cached(cache: Path | None, fn: Any, args: tuple, result: Any) -> None:
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        _job_file(cache, fn, args).write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="one tiny dataset, budgets 2 and 4, one seed")
    ap.add_argument("--no-write", action="store_true", help="do not update experiments/RESULTS.md")
    ap.add_argument("--jobs", type=int, default=2, help="processes (each trains with one thread)")
    ap.add_argument("--datasets", nargs="*", help="a subset of the datasets, by name")
    ap.add_argument("--budgets", nargs="*", type=int, help=f"search budgets (default {' '.join(map(str, BUDGETS))})")
    ap.add_argument("--seeds", type=int, help=f"search seeds 0..N-1 (default {len(SEEDS)})")
    ap.add_argument("--cache", help="keep each finished job's result here as JSON; a rerun reuses them")
    ap.add_argument("--only", choices=("search", "oracle", "baseline"), nargs="*", help="run only these jobs")
    ap.add_argument("--data-seed", type=int, help="generate the planted sets with this seed instead (data never seen)")
    args = ap.parse_args(argv)
    datasets = SMOKE if args.smoke_test else {k: v for k, v in DATASETS.items()
                                               if not args.datasets or k in args.datasets}
    if args.data_seed is not None:
        datasets = {k: {**v, "seed": args.data_seed} if v["kind"] == "planted" else v for k, v in datasets.items()}
    budgets, seeds = ((2, 4), (0,)) if args.smoke_test else (tuple(args.budgets or BUDGETS),
                                                           tuple(range(args.seeds)) if args.seeds else SEEDS)
    smoke = args.smoke_test
    for name, data in datasets.items():  # pretrain the backbones once, before the workers share the cache
        prepared(name, data, smoke)
    jobs = []
    for n, d in datasets.items():
        jobs += [(baseline, (n, d, smoke)), *((one_search, (n, d, s, budgets, smoke)) for s in seeds)]
    jobs += [(oracle, (n, d, smoke)) for n, d in datasets.items()]  # the slowest jobs last
    if args.only:
        names = {"search": one_search, "oracle": oracle, "baseline": baseline}
        jobs = [(fn, a) for fn, a in jobs if fn in {names[o] for o in args.only}]
    cache = Path(args.cache) if args.cache else None
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [(fn, a, None if (c := cached(cache, fn, a)) is not None else pool.submit(fn, *a), c)
                   for fn, a in jobs]
        results = []
        for fn, a, f, c in futures:  # a line per finished job on stderr: a long run shows where it is
            results.append((fn, c if f is None else f.result()))
            store_cached(cache, fn, a, results[-1][1])
            print(f"{fn.__name__}: {results[-1][1]}", file=sys.stderr, flush=True)
    searches = [r for fn, rs in results if fn is one_search for r in rs]
    oracles = [r for fn, r in results if fn is oracle]
    baselines = [r for fn, r in results if fn is baseline]
    lines = [machine_line(), "", *table(searches, baselines, oracles, budgets), *details(searches, oracles)]
    print("\n".join(lines))
    if not args.smoke_test and not args.no_write and budgets == BUDGETS and seeds == SEEDS and args.data_seed is None:
        cmd = "python experiments/bench_quality.py" + (f" --datasets {' '.join(args.datasets)}" if args.datasets else "")
        write_block("bench_quality", "Search quality: the front against baselines and an oracle", lines, cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
