"""Benchmark: the one-shot strategy's ranking and fronts against mfas, nsga2 and random.

1. Enumerable spaces (bench_search's planted xor and av_digits, their exhaustive tables reused
   from bench_search's JSON cache): Kendall tau-b between every spec's inherited-weight val
   accuracy (each seed's supernet) and its stand-alone val accuracy (the table); then
   HV / exhaustive HV at each budget, each strategy driven through ask/tell and answered from
   the table, with each search's wall time = the strategy's own seconds (oneshot: supernet
   training included) + the table's training seconds of the specs it asked.
2. The full default av_digits space (experiments/configs/av_digits.yaml, no exhaustive front):
   oneshot trains its supernet (`--full-steps` per choice on mini-batches of `--full-batch` at
   `--full-lr`) and `--full-budget` asked candidates for real
   (`evaluate_candidate` in-process, one thread); mfas then trains candidates until it has
   spent the same wall time; both fronts' HV use one reference (the run's `reference_point`);
   once per `--full-seeds` seed.

Usage: .venv/bin/python experiments/bench_oneshot.py [--smoke-test] [--no-write]
The full run writes the "One-shot" section of experiments/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from experiments.bench_search import (  # noqa: E402
    DATASETS,
    bench_config,
    exhaustive_table,
    mean_std,
    objectives,
    points,
    references,
    score,
    table_path,
)
from experiments.results_block import command_line, machine_line, write_block  # noqa: E402
from search import pareto  # noqa: E402
from search.config import load_config  # noqa: E402
from search.engine.run import cost_function, prepare, reference_point  # noqa: E402
from search.strategies import StrategyContext, make_strategy  # noqa: E402
from search.strategies.supernet.train import Scorer  # noqa: E402
from search.training.train import evaluate_candidate  # noqa: E402

STRATEGIES = ("oneshot", "mfas", "nsga2", "random")


def say(line: str) -> None:
    print(line, flush=True)


def run_strategy(name: str, space: Any, table: dict, budget: int, seed: int, cost: Any, context: StrategyContext,
                 options: dict) -> tuple[list[str], float, Any]:
    """Drive one search from the table; (asked arch ids, wall seconds, the strategy)."""
    start = time.perf_counter()
    strategy = make_strategy(name, space, seed=seed, budget=budget, cost_fn=cost, context=context,
                             **(options if name == "oneshot" else {}))
    asked = []
    for _ in range(budget):
        spec = strategy.ask()
        asked.append(spec.arch_id)
        strategy.tell(spec, objectives(table[spec.arch_id]))
    own = time.perf_counter() - start
    if name == "oneshot" and strategy.info["supernet"].get("cached"):  # trained for another budget: count it here too
        own += strategy.info["supernet"]["seconds"]
    return asked, own + sum(float(table[a]["seconds"]) for a in asked), strategy


def bench_dataset(title: str, file: str, args: argparse.Namespace) -> list[str]:
    config = bench_config(file, smoke=args.smoke_test, cache_dir=args.cache_dir, runs_dir=args.runs_dir)
    prepared = prepare(config, say=lambda s: None)
    table, _ = exhaustive_table(config, prepared, table_path(config, prepared, Path(args.table_dir)), say)
    refs = references(table)
    exhaustive_hv = {k: pareto.hypervolume(points(table.values()), r) for k, r in refs.items()}
    cost, context = cost_function(prepared), StrategyContext(prepared.taps, config.train, cache={})
    options = {"steps_per_choice": args.steps_per_choice} if args.steps_per_choice else {}
    specs = list(config.space.enumerate())
    real = [float(table[s.arch_id]["val_accuracy"]) for s in specs]
    lines = [f"### {title} (`experiments/configs/{file}`, {len(specs)} specs)", ""]
    rows, taus, trained = [], [], []
    for name in STRATEGIES:
        for budget in args.budgets:
            runs, walls = [], []
            for seed in args.seeds:
                asked, wall, strategy = run_strategy(name, config.space, table, budget, seed, cost, context, options)
                runs.append(score(asked, table, refs, exhaustive_hv))
                walls.append(wall)
                if name == "oneshot" and budget == args.budgets[0]:
                    net = next(v[0] for k, v in context.cache.items() if k == strategy.fingerprint())
                    scorer = Scorer(net, prepared.taps)
                    taus.append(float(kendalltau([scorer(s) for s in specs], real)[0]))
                    trained.append(strategy.info["supernet"])
            rows.append(f"| {name} | {budget} | {mean_std([r['default'] for r in runs])} | "
                        f"{mean_std([r['nadir'] for r in runs])} | {mean_std([r['best_accuracy'] for r in runs])} | "
                        f"{statistics.mean(walls):.2f} |")
            say(rows[-1])
    t = trained[0]
    lines += [f"Kendall tau-b (inherited-weight vs stand-alone val accuracy, all {len(specs)} specs), per seed "
              f"{args.seeds}: " + ", ".join(f"{x:.3f}" for x in taus) + f"; mean {statistics.mean(taus):.3f}. "
              f"Supernet: {t['cells']} cell modules, {t['heads']} heads, {t['params']:,} parameters, "
              f"{t['steps']} steps ({t['steps_per_choice']} per choice), trained in "
              + ", ".join(f"{x['seconds']:.1f}" for x in trained) + " s (per seed); its loss "
              f"{t['first_loss']:.3f} -> {t['last_loss']:.3f}. Training every spec stand-alone took "
              f"{sum(float(r['seconds']) for r in table.values()):.0f} s.", "",
              "| strategy | budget | HV / exhaustive HV (default ref) | HV / exhaustive HV (nadir ref) "
              "| best val accuracy found | wall s per search (strategy + its trials) |", "|---|---|---|---|---|---|",
              *rows, ""]
    say("\n".join(lines[:3]))
    return lines


def front_hv(records: list[dict[str, Any]], ref: list[float]) -> float:
    good = [r for r in records if r["status"] == "ok"]
    return pareto.hypervolume(points(good), np.array(ref))


def bench_full(args: argparse.Namespace) -> list[str]:
    """oneshot vs mfas at equal wall time on the full default av_digits space, real training."""
    config = load_config(ROOT / "experiments" / "configs" / "av_digits.yaml")
    if args.smoke_test:
        config = bench_config(DATASETS["planted xor"], smoke=True, cache_dir=args.cache_dir, runs_dir=args.runs_dir)
    prepared = prepare(config, say=lambda s: None)
    cost = cost_function(prepared)
    ref = reference_point(config.space, cost, config.search.seed)
    context = StrategyContext(prepared.taps, config.train, say=say)
    options = {"steps_per_choice": args.full_steps, "batch_size": args.full_batch, "lr": args.full_lr}
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for seed in args.full_seeds:
        limit = None
        for name in ("oneshot", "mfas"):
            start = time.perf_counter()
            strategy = make_strategy(name, config.space, seed=seed, budget=args.full_budget, cost_fn=cost,
                                     context=context, **(options if name == "oneshot" else {}))
            records: list[dict[str, Any]] = []
            while (limit is None and len(records) < args.full_budget) or (limit is not None and
                                                                           time.perf_counter() - start < limit):
                spec = strategy.ask()
                m = evaluate_candidate(spec, prepared.taps, config.train, backbones=prepared.backbones)
                records.append({**m, "arch_id": spec.arch_id})
                strategy.tell(spec, objectives(m))
            wall = time.perf_counter() - start
            limit = limit or wall
            r = out[name, seed] = {"n": len(records), "wall": wall, "hv": front_hv(records, ref),
                                   "best": max((r["val_accuracy"] for r in records if r["status"] == "ok"),
                                               default=float("nan")),
                                   "extra": strategy.info if name == "oneshot" else {}}
            say(f"  {name} (seed {seed}): {len(records)} candidates in {wall:.0f} s, HV {r['hv']:.4f}")
    shots = [out["oneshot", seed]["extra"] for seed in args.full_seeds]
    o = shots[0]
    per_seed = "; ".join(f"seed {seed}: {x['supernet']['seconds']:.0f} s, loss {x['supernet']['first_loss']:.3f} -> "
                         f"{x['supernet']['last_loss']:.3f}, {x['ranking']['scored']} sub-networks scored by "
                         f"{x['ranking']['mode']} in {x['ranking']['seconds']:.0f} s"
                         for seed, x in zip(args.full_seeds, shots, strict=True))
    lines = [f"### Full default space of av_digits (`experiments/configs/av_digits.yaml`, {config.space.size()} specs)",
             "", f"oneshot: supernet {o['supernet']['steps']} steps ({args.full_steps} per choice, mini-batches of "
             f"{args.full_batch}, lr {args.full_lr:g}; its mean loss over the first / last 50 steps); {per_seed}. "
             f"Then {args.full_budget} candidates trained (the first half from the predicted front, the rest next to "
             "the real front); mfas trained candidates for the same wall time. Seeds "
             f"{args.full_seeds}, one thread, in-process `evaluate_candidate` (the run's recipe); HV reference "
             f"{np.round(ref, 3).tolist()} (`reference_point`, as a run sets it).", "",
             "| strategy | candidates trained | wall s | HV of its front | best val accuracy | seed |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {r['n']} | {r['wall']:.0f} | {r['hv']:.4f} | {r['best']:.3f} | {seed} |"
              for (n, seed), r in sorted(out.items(), key=lambda kv: (kv[0][0] != "oneshot", kv[0][1]))]
    say("\n".join(lines))
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny and fast; writes nothing")
    parser.add_argument("--budgets", type=int, nargs="*", default=[16, 32, 64])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--steps-per-choice", type=int, default=0, help="oneshot's option (0: its default)")
    parser.add_argument("--full-budget", type=int, default=16, help="oneshot's trained candidates on the full space")
    parser.add_argument("--full-steps", type=int, default=40, help="oneshot's steps per choice on the full space")
    parser.add_argument("--full-batch", type=int, default=128, help="oneshot's supernet mini-batch on the full space")
    parser.add_argument("--full-lr", type=float, default=3e-3, help="oneshot's supernet lr on the full space")
    parser.add_argument("--full-seeds", type=int, nargs="*", default=[0, 1], help="seeds of the full-space comparison")
    parser.add_argument("--no-full", action="store_true", help="skip the full-space comparison")
    parser.add_argument("--cache-dir", default=None, help="backbone cache (default: the configs' own)")
    parser.add_argument("--table-dir", default=str(Path(tempfile.gettempdir()) / "fusion-nas-bench-search"),
                        help="bench_search's exhaustive tables (JSON)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        args.runs_dir = str(Path(tmp) / "runs")
        if args.smoke_test:
            args.budgets, args.seeds, args.full_budget, args.full_steps, args.full_seeds = [4, 8], [0], 2, 1, [0]
            args.steps_per_choice = args.steps_per_choice or 3
            args.cache_dir, args.table_dir = str(Path(tmp) / "backbones"), str(Path(tmp) / "tables")
        head = f"{machine_line()}; budgets {args.budgets}, seeds {args.seeds}"
        say(head)
        lines = [head, ""]
        for title, file in DATASETS.items():
            lines += bench_dataset(title, file, args)
        if not args.no_full:
            lines += bench_full(args)
    if not (args.smoke_test or args.no_write):
        command = command_line("bench_oneshot.py", argv)
        write_block("bench_oneshot", "One-shot", lines, command)
        say("wrote experiments/RESULTS.md")


if __name__ == "__main__":
    main()
