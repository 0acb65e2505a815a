"""Benchmark: how much of the exhaustive Pareto front each search strategy finds, and what Ray costs.

1. Exhaustive: on a space small enough to enumerate (experiments/configs/bench_xor.yaml,
   bench_av_digits.yaml) every spec is trained once in-process with `evaluate_candidate`
   (deterministic for the train seed); the table is cached as JSON, so reruns are cheap.
   Its Pareto front (val accuracy max, log10 params_total min, log10 flops_total min)
   and hypervolume use one fixed reference per dataset, `objs_mod.default_reference` of the
   costs of every spec in the space (accuracy 0, the decade above 10x the largest cost),
   and, tighter, the space's nadir (its worst accuracy and largest costs).
2. Strategies: every registered one (`search.strategies.list_strategies`: grid, mfas, nsga2,
   random, and a plugin's) is driven through ask/tell, one spec at a time, answering each
   ask from the table (no retraining); mfas gets the exact `search.engine.run.cost_function`. Reported: HV(found front) / HV(exhaustive front), mean ± std
   over seeds, and in how many seeds the best-val-accuracy spec was among those asked.
3. Overhead: one real `search.engine.run.search` (embedded Ray, 2 CPUs, random strategy on the
   xor config): wall seconds vs the sum of the trials' own seconds, with Ray start-up and
   `prepare` (pretraining, tap cache) timed apart.

Usage: .venv/bin/python experiments/bench_search.py [--smoke-test] [--no-write]
       [--strategies mfas random] [--variants '{"refine": 0}' ...] [--no-overhead] [--seeds 0 1 2 ...]
The full run replaces the generated part of the "Search" section of experiments/RESULTS.md; a run
with --strategies, --variants or --no-overhead only prints (its table is a part).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from experiments.results_block import command_line, machine_line, write_block  # noqa: E402
from search import objectives as objs_mod  # noqa: E402
from search import pareto  # noqa: E402
from search.config import Config, config_from_dict  # noqa: E402
from search.engine.run import Prepared, cost_function, prepare  # noqa: E402
from search.runstore.store import atomic_write, to_jsonable  # noqa: E402
from search.strategies import StrategyContext, list_strategies, make_strategy  # noqa: E402
from search.training.pretrain import cache_key  # noqa: E402
from search.training.train import evaluate_candidate  # noqa: E402
from spaces import ArchSpec, SearchSpace  # noqa: E402

CONFIGS = ROOT / "experiments" / "configs"
DATASETS = {"planted xor": "bench_xor.yaml", "av_digits": "bench_av_digits.yaml"}
TABLE_FORMAT = 2  # bump when what a table row holds, or how a spec trains or is scored, changes (2: small token taps read flattened; a holdout out of val)
KEEP = ("status", "val_accuracy", "test_accuracy", "params_total", "flops_total", "epochs", "seconds")
Table = dict[str, dict[str, Any]]  # arch_id -> KEEP metrics of that spec
Say = Callable[[str], None]


def quiet(_: str) -> None:
    """A `say` that says nothing."""


# ---- configs ------------------------------------------------------------------------------
def shrink(raw: dict[str, Any], ops: Mapping[str, Any]) -> dict[str, Any]:
    """The smoke-test version of a bench config: little data, 1-2 epochs, a ~30-spec space."""
    raw = copy.deepcopy(raw)
    if raw["data"]["kind"] == "planted":
        raw["data"].update(n_train=300, n_test=200)
    raw["backbones"]["pretrain"].update(epochs=1)
    raw["train"].update(epochs=2, patience=2)
    mods = sorted(raw["space"]["depths"])
    raw["space"].update(ops=dict(ops), depths={mods[0]: [0], mods[1]: [0, 2]})
    return raw


def bench_config(file: str, *, smoke: bool, cache_dir: str | None, runs_dir: str) -> Config:
    """A bench config, shrunk for the smoke test, with its backbone cache and run dir set."""
    path = CONFIGS / file
    raw = yaml.safe_load(path.read_text())
    if smoke:
        raw = shrink(raw, {"concat": {}, "tensor": {"proj_dim": [4]}})
    if cache_dir is not None:
        raw["backbones"]["cache_dir"] = cache_dir
    raw["search"] = {**raw.get("search", {}), "runs_dir": runs_dir}
    return config_from_dict(raw, path)


# ---- 1. the exhaustive table ----------------------------------------------------------------
def table_path(config: Config, prepared: Prepared, table_dir: Path) -> Path:
    """Where the table of `config` is cached: keyed by everything that decides its numbers,
    the data's contents included (through the backbones' own cache keys)."""
    d = config.to_dict()
    backbones = {m: cache_key(prepared.dataset, m, b, config.backbones.pretrain, config.data)
                 for m, b in config.backbones.modalities.items()}
    train = {k: v for k, v in d["train"].items() if k != "device"}  # the tables are trained on the CPU
    key = {"space": d["space"], "train": train, "backbones": backbones,
           "format": TABLE_FORMAT, "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return table_dir / f"{config.name}-{digest}.json"


def exhaustive_table(config: Config, prepared: Prepared, path: Path, say: Say = print) -> tuple[Table, float]:
    """Every spec of the space trained once (cached rows are reused); (table, seconds spent now)."""
    table: Table = json.loads(path.read_text())["rows"] if path.exists() else {}
    specs = list(config.space.enumerate())
    ids = {s.arch_id for s in specs}
    # a table cached before the space folded twins holds them too: they trained exactly as
    # their canonical specs (same model, same seed), and no strategy asks them any more
    table = {a: r for a, r in table.items() if a in ids}
    todo = [s for s in specs if s.arch_id not in table]
    start = time.perf_counter()
    for i, spec in enumerate(todo, 1):
        m = evaluate_candidate(spec, prepared.taps, config.train, backbones=prepared.backbones)
        table[spec.arch_id] = {k: m.get(k) for k in KEEP} | {"spec": spec.to_dict()}
        if i % 25 == 0 or i == len(todo):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(to_jsonable({"config": config.to_dict(), "rows": table})))
            say(f"  trained {i}/{len(todo)} specs ({time.perf_counter() - start:.0f} s)")
    return table, time.perf_counter() - start


def ok(row: Mapping[str, Any]) -> bool:
    return row.get("status") == "ok" and row.get("val_accuracy") is not None and np.isfinite(row["val_accuracy"])


def objectives(row: Mapping[str, Any]) -> dict[str, float] | None:
    """What a strategy is told about a spec of the table (None: the trial failed)."""
    if not ok(row):
        return None
    return {"accuracy": float(row["val_accuracy"]), "params": float(row["params_total"]),
            "flops": float(row["flops_total"])}


def points(rows: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Minimisation matrix `[-val accuracy, log10 params, log10 flops]` of the ok rows."""
    good = [r for r in rows if ok(r)]
    cols = [[float(r[k]) for r in good] for k in ("val_accuracy", "params_total", "flops_total")]
    return objs_mod.objective_matrix(*cols).reshape(len(good), 3)


def references(table: Table) -> dict[str, np.ndarray]:
    """The fixed references of a dataset, from every spec of the space:
    `default` (the project's: accuracy 0, the decade above 10x the largest cost) and
    `nadir` (the worst accuracy and the largest costs in the space)."""
    rows = list(table.values())
    params, flops = [float(r["params_total"]) for r in rows], [float(r["flops_total"]) for r in rows]
    acc = [float(r["val_accuracy"]) for r in rows if ok(r)]
    return {"default": objs_mod.default_reference(params, flops),
            "nadir": np.array([-min(acc), np.log10(max(params)), np.log10(max(flops))])}


# ---- 2. strategies on the table ----------------------------------------------------------
def drive(name: str, space: SearchSpace, table: Table, budget: int, seed: int,
          cost: Callable[[ArchSpec], tuple[int, int]] | None, context: StrategyContext | None = None,
          options: Mapping[str, Any] | None = None) -> list[str]:
    """Ask `budget` specs of strategy `name` one at a time, telling each its table row; the arch ids asked.
    `context`: the run's data, for a strategy that trains something itself (oneshot); `options`:
    keyword arguments of the strategy (`search.options`)."""
    strategy = make_strategy(name, space, seed=seed, budget=budget, cost_fn=cost, context=context, **(options or {}))
    asked = []
    for _ in range(budget):
        if strategy.done:
            break
        spec = strategy.ask()
        asked.append(spec.arch_id)
        strategy.tell(spec, objectives(table[spec.arch_id]))
    return asked


def score(asked: Iterable[str], table: Table, refs: Mapping[str, np.ndarray],
          exhaustive_hv: Mapping[str, float]) -> dict[str, float]:
    """HV(found) / HV(exhaustive) per reference, and whether the best-val-accuracy spec was asked."""
    rows = [table[a] for a in set(asked)]
    out = {k: pareto.hypervolume(points(rows), ref) / exhaustive_hv[k] for k, ref in refs.items()}
    best = max(float(r["val_accuracy"]) for r in table.values() if ok(r))
    found = max((float(r["val_accuracy"]) for r in rows if ok(r)), default=float("nan"))
    out.update(best_found=float(found == best), best_accuracy=found)
    return out


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def strategy_rows(config: Config, prepared: Prepared, table: Table, budgets: list[int], seeds: list[int],
                  say: Say = print, strategies: list[str] | None = None,
                  variants: list[dict[str, Any]] | None = None) -> list[str]:
    """The strategy x budget table of one dataset, as markdown lines: every registered strategy
    (or `strategies`), each also with every options mapping of `variants` (`search.options`)."""
    refs = references(table)
    exhaustive_hv = {k: pareto.hypervolume(points(table.values()), ref) for k, ref in refs.items()}
    cost = cost_function(prepared)
    context = StrategyContext(prepared.taps, config.train, cache={})  # one supernet per seed, whatever the budget
    lines = ["| strategy | budget | HV / exhaustive HV (default ref) | HV / exhaustive HV (nadir ref) "
             "| best-accuracy spec found | best val accuracy found | strategy s per search |", "|---|---|---|---|---|---|---|"]
    say("\n".join(lines))
    runs_of = [(name, opts) for name in (strategies or list_strategies())
               for opts in ({}, *(variants or ())) if not opts or name != "random"]
    for name, opts in runs_of:
        label = name + (" " + ", ".join(f"{k}: {json.dumps(v)}" for k, v in opts.items()) if opts else "")
        for budget in budgets:
            runs = []
            start = time.perf_counter()
            for seed in seeds:
                runs.append(score(drive(name, config.space, table, budget, seed, cost, context, opts), table, refs,
                                  exhaustive_hv))
            seconds = (time.perf_counter() - start) / len(seeds)
            found = sum(int(r["best_found"]) for r in runs)
            lines.append(f"| {label} | {budget} | {mean_std([r['default'] for r in runs])} | "
                         f"{mean_std([r['nadir'] for r in runs])} | {found}/{len(seeds)} | "
                         f"{mean_std([r['best_accuracy'] for r in runs])} | {seconds:.2f} |")
            say(lines[-1])
    return lines


def cost_mismatches(prepared: Prepared, table: Table) -> int:
    """Specs whose `cost_function` (what mfas sees) differs from the trained candidate's costs."""
    cost = cost_function(prepared)
    return sum(cost(ArchSpec.from_dict(r["spec"])) != (r["params_total"], r["flops_total"]) for r in table.values())


def bench_dataset(title: str, file: str, args: argparse.Namespace, say: Say = print) -> tuple[list[str], Table]:
    config = bench_config(file, smoke=args.smoke_test, cache_dir=args.cache_dir, runs_dir=args.runs_dir)
    said: list[str] = []
    start = time.perf_counter()
    prepared = prepare(config, say=lambda s: (said.append(s), say(f"  {s}")))
    prepare_s = time.perf_counter() - start
    pretrained = any(s.startswith("pretraining") for s in said)
    path = table_path(config, prepared, Path(args.table_dir))
    cached = path.exists()
    table, seconds = exhaustive_table(config, prepared, path, say)
    space = config.space
    refs = references(table)
    front = points(table.values())
    mask = pareto.pareto_mask(front)
    good = [r for r in table.values() if ok(r)]
    best = max(good, key=lambda r: r["val_accuracy"])
    train_s = sum(float(r["seconds"]) for r in table.values())
    on_front = Counter((r["val_accuracy"], r["params_total"], r["flops_total"])
                       for r, on in zip(good, mask, strict=True) if on)
    lines = [
        f"### {title} (`experiments/configs/{file}`)", "",
        f"Space: {space.size()} specs (" + ", ".join(f"{s} {space.stage_size(s)}" for s in space.stages)
        + f"); {len(good)} trained ok, {len(table) - len(good)} failed. Training every spec once took "
        f"{train_s:.0f} s in-process, 1 thread ({train_s / len(table):.2f} s per spec"
        + ("; this run read the table from its JSON cache" if cached and seconds < 1 else "") + "). "
        f"`prepare` ({'pretraining the backbones' if pretrained else 'backbones from the disk cache'}, "
        f"then the tap cache) took {prepare_s:.2f} s.",
        f"Exhaustive front: {int(mask.sum())} specs ({len(on_front)} distinct points); HV {pareto.hypervolume(front, refs['default']):.4f} with the "
        f"default reference {fmt_ref(refs['default'])}, HV {pareto.hypervolume(front, refs['nadir']):.4f} with the "
        f"nadir reference {fmt_ref(refs['nadir'])} (objectives [-val accuracy, log10 params_total, log10 flops_total]).",
        f"Best val accuracy {best['val_accuracy']:.3f} (test {best['test_accuracy']:.3f}): "
        f"{ArchSpec.from_dict(best['spec']).describe()}. Front points (val accuracy / params / FLOPs), "
        "most accurate first: " + "; ".join(f"{a:.3f} / {p} / {f}" + (f" (x{k})" if k > 1 else "")
                                            for (a, p, f), k in sorted(on_front.items(), key=lambda x: -x[0][0])) + ".",
        f"`cost_function` (mfas's costs before training) differs from the trained candidates' costs on "
        f"{cost_mismatches(prepared, table)} of {len(table)} specs.", "",
    ]
    say("\n".join(lines))
    lines += strategy_rows(config, prepared, table, args.budgets, args.seeds, say, args.strategies, args.variants)
    return [*lines, ""], table


def fmt_ref(ref: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in ref) + "]"


# ---- 3. the Ray overhead ---------------------------------------------------------------------
def bench_overhead(args: argparse.Namespace, table: Table, say: Say = print) -> list[str]:
    """One real search under embedded Ray; wall time against the trials' own seconds."""
    import ray

    from search.engine.run import reference_point, search, start_run

    config = bench_config(DATASETS["planted xor"], smoke=args.smoke_test, cache_dir=args.cache_dir,
                          runs_dir=args.runs_dir)
    config = config_from_dict({**config.to_dict(), "search": {
        **config.search.to_dict(), "strategy": "random", "num_samples": args.trials, "cpus_per_trial": 1,
        "max_concurrent": 2, "baselines": "none", "confirm": 0}},
        config.path)  # Ray's overhead only: no baselines, no confirmation seeds
    t, load = {}, os.getloadavg()[0]
    start = time.perf_counter()
    prepared = prepare(config, say=quiet)  # the backbones are on disk by now (step 1): what search() repeats
    t["prepare"] = time.perf_counter() - start
    start = time.perf_counter()
    reference_point(config.space, cost_function(prepared), config.search.seed)
    t["reference"] = time.perf_counter() - start
    start = time.perf_counter()
    started = not ray.is_initialized()  # a running Ray (a test's shared one) is used as it is, its start untimed
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    t["ray_init"] = time.perf_counter() - start
    try:
        store = start_run(config)
        start = time.perf_counter()
        trials = search(config, store, say=quiet)
        t["search"] = time.perf_counter() - start
    finally:
        start = time.perf_counter()
        if started:
            ray.shutdown()
        t["ray_shutdown"] = time.perf_counter() - start
    n = len(trials)
    sigma = sum(float(r["seconds"]) for r in trials)
    tune_wall = t["search"] - t["prepare"]
    wall = t["ray_init"] + t["search"] + t["ray_shutdown"]
    same = [r for r in trials if r["arch_id"] in table]
    inproc = sum(float(table[r["arch_id"]]["seconds"]) for r in same)
    equal = sum(r["metrics"].get("val_accuracy") == table[r["arch_id"]]["val_accuracy"] for r in same)
    statuses = sorted({r["status"] for r in trials})
    lines = [
        f"One `search.engine.run.search` of {n} random trials on the xor config (statuses: {', '.join(statuses)}), "
        f"embedded Ray with 2 CPUs, 1 CPU per trial, at most 2 at once (1-minute load average before: {load:.1f}):", "",
        "| what | seconds |", "|---|---|",
        f"| `ray.init` (embedded, 2 CPUs{'' if started else '; already running, not started here'}) "
        f"| {t['ray_init']:.2f} |",
        f"| `prepare`, timed apart: backbones from the disk cache + tap cache (search() repeats it first) "
        f"| {t['prepare']:.2f} |",
        f"| `search()` in all | {t['search']:.2f} |",
        f"| of it, the run's reference point (64 sampled specs costed; timed apart) | {t['reference']:.2f} |",
        f"| of it, Tune (search() − prepare) | {tune_wall:.2f} |",
        f"| `ray.shutdown` | {t['ray_shutdown']:.2f} |",
        f"| wall = `ray.init` + `search()` + `ray.shutdown` | {wall:.2f} |",
        f"| Σ trial seconds (each trial's `evaluate_candidate`, as recorded) | {sigma:.2f} |",
        f"| the same {len(same)} specs trained in-process, one at a time (step 1's table) | {inproc:.2f} |", "",
        "Trial seconds under Ray, in trial order: " + ", ".join(f"{float(r['seconds']):.2f}" for r in trials)
        + "; the same specs in-process: " + ", ".join(f"{float(table[r['arch_id']]['seconds']):.2f}" for r in same)
        + ".",
        f"Ratios: wall / Σ trials {wall / sigma:.2f}; Tune part / Σ trials {tune_wall / sigma:.2f} "
        f"(0.50 would be two trials always running and nothing else); per-trial overhead "
        f"(2 × Tune part − Σ trials) / {n} = {(2 * tune_wall - sigma) / n:.2f} CPU-slot seconds. "
        f"{equal} of {len(same)} trials reproduced step 1's val accuracy exactly. The Ray search's wall is "
        f"{wall / inproc:.1f}x the time the same {len(same)} specs take trained in-process one at a time.",
    ]
    say("\n".join(lines))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny and fast; writes nothing")
    parser.add_argument("--budgets", type=int, nargs="*", default=[16, 32, 64])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16, help="trials of the real Ray search")
    parser.add_argument("--cache-dir", default=None, help="backbone cache (default: the configs' own)")
    parser.add_argument("--table-dir", default=str(Path(tempfile.gettempdir()) / "fusion-nas-bench-search"),
                        help="where the exhaustive tables are cached as JSON")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    parser.add_argument("--strategies", nargs="*", help="these strategies only (default: every registered one)")
    parser.add_argument("--variants", nargs="*", type=json.loads, default=[],
                        help="options (a JSON mapping each) every strategy but random also runs with")
    parser.add_argument("--no-overhead", action="store_true", help="skip the real Ray search (part 3)")
    args = parser.parse_args(argv)
    args.no_write = args.no_write or bool(args.strategies or args.variants or args.no_overhead)  # a partial table
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        args.runs_dir = str(Path(tmp) / "runs")
        if args.smoke_test:  # everything in the temporary folder: no cache read or written elsewhere
            args.budgets, args.seeds, args.trials = [4, 8], [0], 4
            args.cache_dir, args.table_dir = str(Path(tmp) / "backbones"), str(Path(tmp) / "tables")
        head = f"{machine_line()}; budgets {args.budgets}, seeds {args.seeds}"
        print(head, flush=True)
        lines, tables = [head, ""], {}
        for title, file in DATASETS.items():
            part, tables[title] = bench_dataset(title, file, args, say=lambda s: print(s, flush=True))
            lines += part
        if not args.no_overhead:
            lines += ["### Ray overhead", "", *bench_overhead(args, tables["planted xor"],
                                                             say=lambda s: print(s, flush=True))]
    if not (args.smoke_test or args.no_write):
        command = command_line("bench_search.py", argv)
        write_block("bench_search", "Search", lines, command)
        print("wrote experiments/RESULTS.md")


if __name__ == "__main__":
    main()
